/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * shim.h: the FreeBSD kernel interfaces aqm_llm.c uses, in user space.
 *
 * Just enough of each to run the module's real glue against the real core
 * in tests/freebsd/harness.c: mbufs and tags (heap-allocated, so that
 * AddressSanitizer sees every free), a clock the test moves, mutexes that
 * count, callouts the test fires, a device pager that calls the module's
 * pager methods, and dummynet's ecn_mark() for IPv4 and IPv6.
 */

#ifndef AQM_LLM_SHIM_H
#define AQM_LLM_SHIM_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/types.h>

typedef unsigned long	u_long;
typedef char		*caddr_t;
typedef int64_t		sbintime_t;
typedef void		*module_t;

#define	__offsetof(t, f)	offsetof(t, f)
#ifndef IPTOS_ECN_MASK
#define	IPTOS_ECN_MASK		0x03
#endif
#define	IPV6_VERSION		0x60

/* malloc(9) */
struct malloc_type { const char *name; };
#define	MALLOC_DEFINE(v, s, d)	struct malloc_type v[1] = { { s } }
#define	M_NOWAIT	0x1
#define	M_WAITOK	0x2
#define	M_ZERO		0x100
extern int shim_fail_malloc;
static inline void *
shim_malloc(size_t n, struct malloc_type *t, int flags)
{

	(void)t;
	if (shim_fail_malloc)
		return (NULL);
	return (flags & M_ZERO ? calloc(1, n) : malloc(n));
}
#define	malloc(n, t, f)		shim_malloc((n), (t), (f))
#define	free(p, t)		((void)(t), (free)(p))

/* mutex(9): count holders so the harness can check balance. */
struct mtx { int held; int inited; const char *name; };
#define	MTX_DEF		0
void	mtx_init(struct mtx *, const char *, const char *, int);
void	mtx_lock(struct mtx *);
void	mtx_unlock(struct mtx *);
void	mtx_destroy(struct mtx *);

/* atomic(9) */
#define	atomic_add_int(p, v)		__atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define	atomic_subtract_int(p, v)	__atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)

/* Time: the harness sets it. */
extern uint64_t shim_now_ns;
#define	SBT_1MS		((sbintime_t)4294967)
static inline sbintime_t sbinuptime(void) { return ((sbintime_t)shim_now_ns); }
static inline int64_t sbttons(sbintime_t s) { return ((int64_t)s); }

/* callout(9): one pending function per callout, fired by the harness. */
struct callout {
	struct mtx	*mtx;
	void		(*fn)(void *);
	void		*arg;
	int		 pending;
};
void	callout_init_mtx(struct callout *, struct mtx *, int);
void	callout_reset_sbt(struct callout *, sbintime_t, sbintime_t,
	    void (*)(void *), void *, int);
void	callout_schedule_sbt(struct callout *, sbintime_t, sbintime_t, int);
int	callout_async_drain(struct callout *, void (*)(void *));
void	shim_callout_fire(struct callout *);

/* mbuf(9) and tags */
struct m_tag {
	SLIST_ENTRY(m_tag) m_tag_link;
	uint16_t	m_tag_id;
	uint16_t	m_tag_len;
	uint32_t	m_tag_cookie;
};
struct pkthdr { int len; SLIST_HEAD(, m_tag) tags; };
struct mbuf {
	struct mbuf	*m_nextpkt;
	char		*m_data;
	int		 m_len;
	struct pkthdr	 m_pkthdr;
	char		 buf[256];
};
#define	mtod(m, t)	((t)(void *)((m)->m_data))
extern int shim_mbufs_freed;
void	m_freem(struct mbuf *);
struct m_tag *m_tag_alloc(uint32_t, uint16_t, int, int);
void	m_tag_prepend(struct mbuf *, struct m_tag *);
struct m_tag *m_tag_locate(struct mbuf *, uint32_t, uint16_t, struct m_tag *);
void	m_tag_delete(struct mbuf *, struct m_tag *);

/* dummynet */
struct dn_id { uint16_t len; uint8_t type; uint8_t subtype; uint32_t id; };
struct dn_flow { struct dn_id oid; };
struct dn_sch { struct dn_id oid; uint32_t sched_nr; };
struct dn_extra_parms;
#define	MOD_LOAD	0
#define	MOD_UNLOAD	1
extern struct dn_alg *shim_dn_alg;
int	ecn_mark(struct mbuf *);

/* conf(9), devices and the device pager */
#define	ucred	shim_ucred	/* glibc has its own struct ucred */
struct ucred { int uid; };
struct thread { struct ucred *td_ucred; };
extern struct thread *curthread;
struct cdev { int mode, uid, gid; const char *name; };
struct cdevsw;
typedef uint64_t vm_ooffset_t, vm_size_t, vm_paddr_t, vm_offset_t;
typedef int vm_prot_t, vm_memattr_t;
typedef uint64_t vm_pindex_t;
struct vm_page { int flags; vm_paddr_t phys_addr; vm_pindex_t pindex; int valid; };
typedef struct vm_page *vm_page_t;
struct vm_object { vm_memattr_t memattr; void *handle; };
typedef struct vm_object *vm_object_t;
#define	PG_FICTITIOUS	0x1
#define	VM_PAGER_OK	0
#define	VM_PAGER_FAIL	1
#define	OBJT_DEVICE	3
#define	VM_OBJECT_WLOCK(o)	((void)(o))
#define	VM_OBJECT_WUNLOCK(o)	((void)(o))
struct cdev_pager_ops {
	int	(*cdev_pg_fault)(vm_object_t, vm_ooffset_t, int, vm_page_t *);
	int	(*cdev_pg_ctor)(void *, vm_ooffset_t, vm_prot_t, vm_ooffset_t,
		    struct ucred *, u_short *);
	void	(*cdev_pg_dtor)(void *);
};
extern struct cdev_pager_ops *shim_pager_ops;
vm_object_t cdev_pager_allocate(void *, int, struct cdev_pager_ops *,
	    vm_ooffset_t, vm_prot_t, vm_ooffset_t, struct ucred *);
static inline vm_paddr_t vtophys(vm_offset_t va) { return (va); }
void	vm_page_updatefake(vm_page_t, vm_paddr_t, vm_memattr_t);
vm_page_t vm_page_getfake(vm_paddr_t, vm_memattr_t);
void	vm_page_replace(vm_page_t, vm_object_t, vm_pindex_t, vm_page_t);
static inline void vm_page_valid(vm_page_t m) { m->valid = 1; }
#define	round_page(x)	(((x) + 4095) & ~(uint64_t)4095)
vm_offset_t kmem_malloc(vm_size_t, int);
void	kmem_free(void *, vm_size_t);

typedef int d_ioctl_t(struct cdev *, u_long, caddr_t, int, struct thread *);
typedef int d_mmap_single_t(struct cdev *, vm_ooffset_t *, vm_size_t,
	    vm_object_t *, int);
struct cdevsw {
	int		 d_version;
	const char	*d_name;
	d_ioctl_t	*d_ioctl;
	d_mmap_single_t	*d_mmap_single;
};
#define	D_VERSION	1
#define	UID_ROOT	0
#define	GID_WHEEL	0
struct make_dev_args {
	struct cdevsw	*mda_devsw;
	int		 mda_uid, mda_gid, mda_mode;
};
void	make_dev_args_init(struct make_dev_args *);
int	make_dev_s(struct make_dev_args *, struct cdev **, const char *, ...);
void	destroy_dev(struct cdev *);

/* sysctl(9): the handlers are called directly by the harness. */
struct sysctl_oid;
struct sysctl_req { void *newptr; uint64_t newval; uint64_t oldval; };
#define	SYSCTL_HANDLER_ARGS struct sysctl_oid *oidp, void *arg1, \
	intmax_t arg2, struct sysctl_req *req
int	sysctl_handle_int(struct sysctl_oid *, void *, intmax_t,
	    struct sysctl_req *);
int	sysctl_handle_64(struct sysctl_oid *, void *, intmax_t,
	    struct sysctl_req *);
#define	SYSCTL_DECL(n)			extern int shim_decl_##n
#define	SYSCTL_NODE(p, n, name, ...)	__attribute__((unused)) int shim_node_##name
#define	SYSCTL_PROC(p, n, name, ...)	extern int shim_proc_##name
#define	SYSCTL_INT(p, n, name, ...)	extern int shim_int_##name
#define	SYSCTL_UINT(p, n, name, ...)	extern int shim_uint_##name

/* module(9) */
typedef struct { const char *name; int (*evhand)(module_t, int, void *);
	void *priv; } moduledata_t;
#define	DECLARE_MODULE(n, d, s, o)	moduledata_t *shim_module = &(d)
#define	MODULE_DEPEND(...)		extern int shim_module_depend
#define	MODULE_VERSION(...)		extern int shim_module_version

#include "aqm_dn_compat.h"

#endif /* !AQM_LLM_SHIM_H */
