/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * shim.c: user-space stand-ins for the kernel functions aqm_llm.c calls.
 */

#include "shim.h"

int shim_fail_malloc;
uint64_t shim_now_ns = 1000000000ull;
int shim_mbufs_freed;
struct dn_alg *shim_dn_alg;
static struct ucred shim_cred;
static struct thread shim_thread = { &shim_cred };
struct thread *curthread = &shim_thread;

void
mtx_init(struct mtx *m, const char *name, const char *type, int opts)
{

	(void)type;
	(void)opts;
	m->held = 0;
	m->inited = 1;
	m->name = name;
}

void
mtx_lock(struct mtx *m)
{

	assert(m->inited && "lock of an uninitialised mutex");
	assert(m->held == 0 && "recursive lock");
	m->held = 1;
}

void
mtx_unlock(struct mtx *m)
{

	assert(m->held == 1 && "unlock of a mutex not held");
	m->held = 0;
}

void
mtx_destroy(struct mtx *m)
{

	assert(m->held == 0 && "destroy of a held mutex");
	m->inited = 0;
}

void
callout_init_mtx(struct callout *c, struct mtx *m, int flags)
{

	(void)flags;
	memset(c, 0, sizeof(*c));
	c->mtx = m;
}

void
callout_reset_sbt(struct callout *c, sbintime_t sbt, sbintime_t pr,
    void (*fn)(void *), void *arg, int flags)
{

	(void)sbt;
	(void)pr;
	(void)flags;
	assert(c->mtx->held && "callout armed without its mutex");
	c->fn = fn;
	c->arg = arg;
	c->pending = 1;
}

void
callout_schedule_sbt(struct callout *c, sbintime_t sbt, sbintime_t pr,
    int flags)
{

	(void)sbt;
	(void)pr;
	(void)flags;
	c->pending = 1;
}

/* Not running in this single-threaded world: stopped, no drain call. */
int
callout_async_drain(struct callout *c, void (*drain)(void *))
{

	(void)drain;
	assert(c->mtx->held && "callout_async_drain without its mutex");
	c->pending = 0;
	return (1);
}

void
shim_callout_fire(struct callout *c)
{

	if (!c->pending)
		return;
	c->pending = 0;
	mtx_lock(c->mtx);
	c->fn(c->arg);
	mtx_unlock(c->mtx);
}

void
m_freem(struct mbuf *m)
{
	struct m_tag *t;

	while ((t = SLIST_FIRST(&m->m_pkthdr.tags)) != NULL) {
		SLIST_REMOVE_HEAD(&m->m_pkthdr.tags, m_tag_link);
		(free)(t);
	}
	shim_mbufs_freed++;
	(free)(m);
}

struct m_tag *
m_tag_alloc(uint32_t cookie, uint16_t type, int len, int how)
{
	struct m_tag *t;

	(void)how;
	if (shim_fail_malloc)
		return (NULL);
	t = calloc(1, sizeof(*t) + (size_t)len);
	t->m_tag_cookie = cookie;
	t->m_tag_id = type;
	t->m_tag_len = (uint16_t)len;
	return (t);
}

void
m_tag_prepend(struct mbuf *m, struct m_tag *t)
{

	SLIST_INSERT_HEAD(&m->m_pkthdr.tags, t, m_tag_link);
}

struct m_tag *
m_tag_locate(struct mbuf *m, uint32_t cookie, uint16_t type, struct m_tag *t)
{

	(void)t;
	SLIST_FOREACH(t, &m->m_pkthdr.tags, m_tag_link)
		if (t->m_tag_cookie == cookie && t->m_tag_id == type)
			return (t);
	return (NULL);
}

void
m_tag_delete(struct mbuf *m, struct m_tag *t)
{

	SLIST_REMOVE(&m->m_pkthdr.tags, t, m_tag, m_tag_link);
	(free)(t);
}

/* RFC 1624 incremental update of the IPv4 header checksum. */
static void
ip_tos_change(struct ip *ip, uint8_t tos)
{
	uint16_t old = htons((uint16_t)(ip->ip_v << 12 | ip->ip_hl << 8 |
	    ip->ip_tos));
	uint16_t new;
	uint32_t sum;

	ip->ip_tos = tos;
	new = htons((uint16_t)(ip->ip_v << 12 | ip->ip_hl << 8 | tos));
	sum = (uint16_t)~ntohs(ip->ip_sum) + (uint16_t)~ntohs(old) + ntohs(new);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->ip_sum = htons((uint16_t)~sum);
}

/* Dummynet's ecn_mark(): CE on an ECN-capable packet, 0 otherwise. */
int
ecn_mark(struct mbuf *m)
{
	struct ip *ip = mtod(m, struct ip *);
	struct ip6_hdr *ip6;
	uint32_t flow;

	if (ip->ip_v == 4) {
		if ((ip->ip_tos & IPTOS_ECN_MASK) == 0)
			return (0);
		if ((ip->ip_tos & IPTOS_ECN_MASK) != IPTOS_ECN_MASK)
			ip_tos_change(ip, ip->ip_tos | IPTOS_ECN_MASK);
		return (1);
	}
	if (ip->ip_v == 6) {
		ip6 = mtod(m, struct ip6_hdr *);
		flow = ntohl(ip6->ip6_flow);
		if (((flow >> 20) & IPTOS_ECN_MASK) == 0)
			return (0);
		ip6->ip6_flow = htonl(flow | (IPTOS_ECN_MASK << 20));
		return (1);
	}
	return (0);
}

int
dn_sched_modevent(module_t mod, int cmd, void *arg)
{

	(void)mod;
	if (cmd == MOD_LOAD) {
		shim_dn_alg = arg;
		return (0);
	}
	if (shim_dn_alg != NULL && shim_dn_alg->ref_count > 0)
		return (EBUSY);
	shim_dn_alg = NULL;
	return (0);
}

static struct cdev shim_cdev;

void
make_dev_args_init(struct make_dev_args *a)
{

	memset(a, 0, sizeof(*a));
}

int
make_dev_s(struct make_dev_args *a, struct cdev **dev, const char *fmt, ...)
{

	shim_cdev.mode = a->mda_mode;
	shim_cdev.uid = a->mda_uid;
	shim_cdev.gid = a->mda_gid;
	shim_cdev.name = fmt;
	*dev = &shim_cdev;
	return (0);
}

void
destroy_dev(struct cdev *dev)
{

	dev->name = NULL;
}

static struct vm_object shim_obj;
struct cdev_pager_ops *shim_pager_ops;

vm_object_t
cdev_pager_allocate(void *handle, int type, struct cdev_pager_ops *ops,
    vm_ooffset_t size, vm_prot_t prot, vm_ooffset_t foff, struct ucred *cred)
{
	u_short color;

	(void)type;
	if (ops->cdev_pg_ctor(handle, size, prot, foff, cred, &color) != 0)
		return (NULL);
	shim_pager_ops = ops;
	shim_obj.handle = handle;
	return (&shim_obj);
}

void
vm_page_updatefake(vm_page_t m, vm_paddr_t paddr, vm_memattr_t ma)
{

	(void)ma;
	m->phys_addr = paddr;
}

vm_page_t
vm_page_getfake(vm_paddr_t paddr, vm_memattr_t ma)
{
	vm_page_t m = calloc(1, sizeof(*m));

	(void)ma;
	m->flags = PG_FICTITIOUS;
	m->phys_addr = paddr;
	return (m);
}

void
vm_page_replace(vm_page_t mnew, vm_object_t obj, vm_pindex_t pindex,
    vm_page_t mold)
{

	(void)obj;
	(void)mold;
	mnew->pindex = pindex;
}

vm_offset_t
kmem_malloc(vm_size_t size, int flags)
{
	void *p = aligned_alloc(4096, size);

	if (p != NULL && (flags & M_ZERO))
		memset(p, 0, size);
	return ((vm_offset_t)p);
}

void
kmem_free(void *p, vm_size_t size)
{

	(void)size;
	(free)(p);
}

int
sysctl_handle_int(struct sysctl_oid *oidp, void *arg1, intmax_t arg2,
    struct sysctl_req *req)
{

	(void)oidp;
	(void)arg2;
	req->oldval = *(u_int *)arg1;
	if (req->newptr != NULL)
		*(u_int *)arg1 = (u_int)req->newval;
	return (0);
}

int
sysctl_handle_64(struct sysctl_oid *oidp, void *arg1, intmax_t arg2,
    struct sysctl_req *req)
{

	(void)oidp;
	(void)arg2;
	req->oldval = *(uint64_t *)arg1;
	return (0);
}
