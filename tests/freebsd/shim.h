/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * shim.h: the FreeBSD kernel interfaces aqm_llm.c uses, in user space, and a
 * small dummynet that calls the scheduler the way FreeBSD 14's does.
 *
 * Enough of each to run the module's real glue against the real core in
 * tests/freebsd/harness.c: mbufs and tags on the heap (AddressSanitizer sees
 * every free), interfaces that can detach while packets wait, a clock the
 * test moves, mutexes that are real (pthreads) and count misuse, callouts
 * the test fires, a device pager that calls the module's pager methods,
 * sysctls registered and removed as the kernel does, and dummynet: the
 * scheduler list (a CK_LIST written at the kernel's offsets), schedulers
 * with their private area and internal flowset (freed before the instance
 * on delete, reused on reconfiguration, as config_sched() and delete_schk()
 * do), instances allocated and destroyed as si_new() and si_destroy() do
 * (the dn_queue at (si + 1) read for a single-queue scheduler, a flowset
 * AQM's init and cleanup), idle expiry, its packet tag first on every
 * packet, and ecn_mark() at the tag's IP header offset.  Unlike
 * dummynet_io(), enqueue does not serve the instance at once: the harness
 * dequeues when it chooses, as a busy link would.
 */

#ifndef AQM_LLM_SHIM_H
#define AQM_LLM_SHIM_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <pthread.h>
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
#define	ETHER_HDR_LEN		14

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

/*
 * mutex(9), on pthreads.  Misuse (an uninitialised or destroyed mutex
 * locked, a recursive lock, an unlock by another thread) is counted in
 * shim_lock_errors and reported: the harness checks it is zero.
 */
struct mtx {
	pthread_mutex_t	 m;
	pthread_t	 owner;
	int		 held;
	int		 inited;
	const char	*name;
};
#define	MTX_DEF		0
extern volatile int shim_lock_errors;
/* Called after each unlock of the mutex so named (tests interleave here). */
extern const char *shim_unlock_hook_name;
extern void (*shim_unlock_hook)(void);
void	mtx_init(struct mtx *, const char *, const char *, int);
void	mtx_lock(struct mtx *);
void	mtx_unlock(struct mtx *);
void	mtx_destroy(struct mtx *);

/* atomic(9) */
#define	atomic_add_int(p, v)		__atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define	atomic_subtract_int(p, v)	__atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)

/* Time: the harness sets it. */
extern volatile uint64_t shim_now_ns;
#define	SBT_1MS		((sbintime_t)4294967)
static inline sbintime_t sbinuptime(void) { return ((sbintime_t)shim_now_ns); }
static inline int64_t sbttons(sbintime_t s) { return ((int64_t)s); }

/* callout(9): one pending function per callout, fired by the harness. */
struct callout {
	struct mtx	*mtx;
	void		(*fn)(void *);
	void		*arg;
	int		 pending;
	void		(*drain)(void *);
};
/* Set: callout_async_drain finds the callout running (drain called later). */
extern int shim_callout_running;
void	callout_init_mtx(struct callout *, struct mtx *, int);
void	callout_reset_sbt(struct callout *, sbintime_t, sbintime_t,
	    void (*)(void *), void *, int);
void	callout_schedule_sbt(struct callout *, sbintime_t, sbintime_t, int);
int	callout_async_drain(struct callout *, void (*)(void *));
void	shim_callout_fire(struct callout *);
void	shim_callout_finish(struct callout *);	/* the running one returns */

/* Interfaces: an index and a generation, as if_getindex/if_getidxgen. */
struct ifnet {
	uint16_t	 if_index;
	uint16_t	 if_idxgen;
	char		 if_xname[16];
};
struct ifnet *shim_if_attach(const char *);
void	shim_if_detach(struct ifnet *);

/* mbuf(9) and tags */
struct m_tag {
	SLIST_ENTRY(m_tag) m_tag_link;
	uint16_t	m_tag_id;
	uint16_t	m_tag_len;
	uint32_t	m_tag_cookie;
};
#define	CSUM_SND_TAG	0x80000000
struct pkthdr {
	union {
		struct ifnet	*rcvif;
		struct {
			uint16_t rcvidx;
			uint16_t rcvgen;
		};
	};
	int		 len;
	uint32_t	 csum_flags;
	SLIST_HEAD(, m_tag) tags;
};
struct mbuf {
	struct mbuf	*m_nextpkt;
	char		*m_data;
	int		 m_len;
	struct pkthdr	 m_pkthdr;
	char		 buf[256];
};
#define	mtod(m, t)	((t)(void *)((m)->m_data))
#define	MTAG_ABI_COMPAT		0
#define	PACKET_TAG_DUMMYNET	15
extern volatile int shim_mbufs_freed;
void	m_freem(struct mbuf *);
struct m_tag *m_tag_alloc(uint32_t, uint16_t, int, int);
void	m_tag_prepend(struct mbuf *, struct m_tag *);
struct m_tag *m_tag_first(struct mbuf *);
struct m_tag *m_tag_locate(struct mbuf *, uint32_t, uint16_t, struct m_tag *);
void	m_tag_delete(struct mbuf *, struct m_tag *);
void	m_rcvif_serialize(struct mbuf *);
struct ifnet *m_rcvif_restore(struct mbuf *);

/* The public dummynet and ipfw types (netinet/ip_dummynet.h, ip_fw.h). */
#define	NEW_AQM
struct ipfw_flow_id {
	uint32_t	dst_ip;
	uint32_t	src_ip;
	uint16_t	dst_port;
	uint16_t	src_port;
	uint8_t		fib;
	uint8_t		proto;
	uint8_t		_flags;
	uint8_t		addr_type;
	struct in6_addr	dst_ip6;
	struct in6_addr	src_ip6;
	uint32_t	flow_id6;
	uint32_t	extra;
};
struct dn_id { uint16_t len; uint8_t type; uint8_t subtype; uint32_t id; };
enum { DN_NONE = 0, DN_LINK = 1, DN_FS, DN_SCH, DN_SCH_I, DN_QUEUE,
	DN_DELAY_LINE, DN_PROFILE, DN_FLOW };
struct dn_link {
	struct dn_id	oid;
	int32_t		link_nr;
	uint32_t	bandwidth;
	int		delay;
	uint64_t	burst;
};
struct dn_fs {
	struct dn_id	oid;
	uint32_t	fs_nr;
	uint32_t	flags;
	int		qsize;
	int32_t		plr;
	uint32_t	buckets;
	struct ipfw_flow_id flow_mask;
	uint32_t	sched_nr;
	int		par[4];
	int		w_q;
	int		max_th;
	int		min_th;
	int		max_p;
};
struct dn_flow {
	struct dn_id	oid;
	struct ipfw_flow_id fid;
	uint64_t	tot_pkts;
	uint64_t	tot_bytes;
	uint32_t	length;
	uint32_t	len_bytes;
	uint32_t	drops;
};
struct dn_sch {
	struct dn_id	oid;
	uint32_t	sched_nr;
	uint32_t	buckets;
	uint32_t	flags;
	char		name[16];
	struct ipfw_flow_id sched_mask;
};
#define	MOD_LOAD	0
#define	MOD_UNLOAD	1

/* conf(9), devices and the device pager */
#define	ucred	shim_ucred	/* glibc has its own struct ucred */
struct ucred { int uid; };
struct thread { struct ucred *td_ucred; };
extern struct thread *curthread;
struct cdev { int mode, uid, gid, alive; const char *name; };
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
/* The device as userland reaches it: ENXIO once destroyed. */
int	shim_dev_ioctl(u_long, void *);
int	shim_dev_mmap(vm_size_t, vm_object_t *);

/*
 * sysctl(9).  Static oids are registered when the program starts (as the
 * kernel linker registers a module's before its MOD_LOAD) and never
 * removed; dynamic ones live from SYSCTL_ADD_* to sysctl_ctx_free().  The
 * harness reads and writes them by leaf name.
 */
struct sysctl_oid;
struct sysctl_oid_list;
struct sysctl_req { void *newptr; uint64_t newval; uint64_t oldval; };
struct sysctl_ctx_list { int n; struct sysctl_oid *oids[64]; };
#define	SYSCTL_HANDLER_ARGS struct sysctl_oid *oidp, void *arg1, \
	intmax_t arg2, struct sysctl_req *req
typedef int shim_sysctl_fn(SYSCTL_HANDLER_ARGS);
int	sysctl_handle_int(struct sysctl_oid *, void *, intmax_t,
	    struct sysctl_req *);
int	sysctl_handle_64(struct sysctl_oid *, void *, intmax_t,
	    struct sysctl_req *);
#define	OID_AUTO	(-1)
#define	CTLFLAG_RD	0x80000000
#define	CTLFLAG_WR	0x40000000
#define	CTLFLAG_RW	(CTLFLAG_RD | CTLFLAG_WR)
#define	CTLFLAG_RDTUN	CTLFLAG_RD
#define	CTLFLAG_MPSAFE	0x00040000
#define	CTLTYPE_UINT	0x6
#define	CTLTYPE_U64	0x9
#define	CTLTYPE_S64	0x4
void	sysctl_ctx_init(struct sysctl_ctx_list *);
int	sysctl_ctx_free(struct sysctl_ctx_list *);
struct sysctl_oid *shim_sysctl_add(struct sysctl_ctx_list *, const char *,
	    shim_sysctl_fn *, void *, intmax_t, int);
#define	SYSCTL_STATIC_CHILDREN(n)	((struct sysctl_oid_list *)0)
#define	SYSCTL_CHILDREN(o)		((struct sysctl_oid_list *)(o))
#define	SYSCTL_ADD_NODE(c, p, n, name, f, h, d)			\
	((void)(p), shim_sysctl_add((c), (name), NULL, NULL, 0, 0))
#define	SYSCTL_ADD_PROC(c, p, n, name, f, a1, a2, h, fmt, d)	\
	((void)(p), shim_sysctl_add((c), (name), (h), (a1), (a2), 0))
#define	SYSCTL_ADD_INT(c, p, n, name, f, ptr, v, d)		\
	((void)(p), shim_sysctl_add((c), (name), NULL, (void *)(ptr), 0, 1))
#define	SYSCTL_DECL(n)			extern int shim_decl_##n
#define	SHIM_STATIC_OID(name, fn, a1, a2, kind)				\
	static void __attribute__((constructor)) shim_oid_##name(void)	\
	{ (void)shim_sysctl_add(NULL, #name, (fn), (a1), (a2), (kind)); }
#define	SYSCTL_NODE(p, n, name, ...)					\
	int shim_node_##name __attribute__((unused));			\
	SHIM_STATIC_OID(name, NULL, NULL, 0, 0)
#define	SYSCTL_PROC(p, n, name, f, a1, a2, h, ...)			\
	SHIM_STATIC_OID(name, h, a1, a2, 0)
#define	SYSCTL_INT(p, n, name, f, ptr, ...)				\
	SHIM_STATIC_OID(name, NULL, (void *)(ptr), 0, 1)
#define	SYSCTL_UINT(p, n, name, f, ptr, ...)				\
	SHIM_STATIC_OID(name, NULL, (void *)(ptr), 0, 1)
int	shim_sysctl(const char *, uint64_t *, const uint64_t *);
int	shim_sysctl_count(void);
#define	TUNABLE_INT_FETCH(path, var)	((void)(path), (void)(var))

/* module(9) and SYSINIT order (the values of FreeBSD 14's sys/kernel.h) */
#define	SI_SUB_PROTO_DOMAIN		0x8800000
#define	SI_SUB_PROTO_FIREWALL		0x8806000
#define	SI_SUB_PROTO_IFATTACHDOMAIN	0x8808000
#define	SI_ORDER_ANY			0xfffffff
typedef struct { const char *name; int (*evhand)(module_t, int, void *);
	void *priv; } moduledata_t;
struct shim_module { moduledata_t *data; unsigned sub, order; };
extern struct shim_module shim_module;
#define	DECLARE_MODULE(n, d, s, o)					\
	static void __attribute__((constructor)) shim_declare_##n(void)	\
	{ shim_module.data = &(d); shim_module.sub = (s);		\
	  shim_module.order = (o); }
#define	MODULE_DEPEND(...)		extern int shim_module_depend
#define	MODULE_VERSION(...)		extern int shim_module_version
/* Dummynet's own module event and VNET init (ip_dummynet.c). */
#define	SHIM_DN_SUB		SI_SUB_PROTO_FIREWALL
#define	SHIM_DN_ORDER		(SI_ORDER_ANY - 128)

#include "aqm_dn_compat.h"

/* The flowset AQM interface, as far as dummynet's si_new/si_destroy use it. */
struct dn_aqm {
	int	(*init)(struct dn_queue *);
	int	(*cleanup)(struct dn_queue *);
};

/*
 * Dummynet.  shim_dn_lock is its lock: the harness holds it around every
 * scheduler call, as dummynet does.
 */
extern pthread_mutex_t shim_dn_lock;
extern int shim_dn_ready;		/* dummynet's SYSINITs have run */
extern int shim_dn_tag_errors;		/* dn_tag_get() found another tag first */
extern int shim_dn_alg_loaded;
void	shim_dn_boot(void);		/* SYSINITs in order, modules at boot */
struct dn_alg *shim_find_sched(const char *);
int	shim_alg_ref_count(const struct dn_alg *);	/* at the kernel offset */
struct dn_schk *shim_sched_config(int, const char *, struct dn_aqm *);
void	shim_sched_delete(struct dn_schk *);
struct dn_schk *shim_sched_reconfigure(struct dn_schk *);
struct dn_sch_inst *shim_si_find(struct dn_schk *);
int	shim_si_drain(struct dn_schk *);	/* 1: the idle instance went */
void	shim_si_destroy(struct dn_schk *);
int	shim_dn_io(struct dn_schk *, struct mbuf *, int);
struct mbuf *shim_dn_serve(struct dn_schk *);
struct dn_pkt_tag *dn_tag_get(struct mbuf *);
int	ecn_mark(struct mbuf *);
int	dn_sched_modevent(module_t, int, void *);
/* Called where unload_dn_sched() sleeps in NET_EPOCH_WAIT(). */
extern void (*shim_epoch_wait_hook)(void);

#endif /* !AQM_LLM_SHIM_H */
