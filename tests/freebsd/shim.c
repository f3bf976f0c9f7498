/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * shim.c: user-space stand-ins for the kernel functions aqm_llm.c calls,
 * and the part of dummynet that calls a scheduler (see shim.h).
 */

#include "shim.h"

#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>

int shim_fail_malloc;
volatile uint64_t shim_now_ns = 1000000000ull;
volatile int shim_mbufs_freed;
volatile int shim_lock_errors;
const char *shim_unlock_hook_name;
void (*shim_unlock_hook)(void);
static struct ucred shim_cred;
static struct thread shim_thread = { &shim_cred };
struct thread *curthread = &shim_thread;
struct shim_module shim_module;

static void
shim_lock_error(const struct mtx *m, const char *what)
{

	__atomic_fetch_add(&shim_lock_errors, 1, __ATOMIC_SEQ_CST);
	fprintf(stderr, "shim: %s (mutex %s)\n", what,
	    m->name != NULL ? m->name : "?");
}

/* -- mutex(9) ---------------------------------------------------------------- */

void
mtx_init(struct mtx *m, const char *name, const char *type, int opts)
{

	(void)type;
	(void)opts;
	pthread_mutex_init(&m->m, NULL);
	m->held = 0;
	m->name = name;
	__atomic_store_n(&m->inited, 1, __ATOMIC_SEQ_CST);
}

void
mtx_lock(struct mtx *m)
{

	if (!__atomic_load_n(&m->inited, __ATOMIC_SEQ_CST))
		shim_lock_error(m, "lock of an uninitialised or destroyed mutex");
	if (m->held && pthread_equal(m->owner, pthread_self())) {
		shim_lock_error(m, "recursive lock");
		return;
	}
	pthread_mutex_lock(&m->m);
	m->owner = pthread_self();
	m->held = 1;
}

void
mtx_unlock(struct mtx *m)
{
	void (*hook)(void);

	if (!m->held || !pthread_equal(m->owner, pthread_self())) {
		shim_lock_error(m, "unlock of a mutex not held");
		return;
	}
	m->held = 0;
	pthread_mutex_unlock(&m->m);
	hook = shim_unlock_hook;
	if (hook != NULL && shim_unlock_hook_name != NULL &&
	    m->name != NULL && strcmp(m->name, shim_unlock_hook_name) == 0) {
		shim_unlock_hook = NULL;	/* once, not from itself */
		hook();
	}
}

void
mtx_destroy(struct mtx *m)
{

	if (m->held)
		shim_lock_error(m, "destroy of a held mutex");
	__atomic_store_n(&m->inited, 0, __ATOMIC_SEQ_CST);
}

/* -- callout(9) ------------------------------------------------------------- */

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
	if (!c->mtx->held)
		shim_lock_error(c->mtx, "callout armed without its mutex");
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

int shim_callout_running;

/*
 * As FreeBSD's: 1 when a pending callout was stopped, 0 when it is running
 * (drain is called when it returns: shim_callout_finish), and no drain.
 */
int
callout_async_drain(struct callout *c, void (*drain)(void *))
{

	if (!c->mtx->held)
		shim_lock_error(c->mtx, "callout_async_drain without its mutex");
	c->pending = 0;
	if (shim_callout_running) {
		c->drain = drain;
		return (0);
	}
	return (1);
}

void
shim_callout_finish(struct callout *c)
{
	void (*drain)(void *) = c->drain;

	c->drain = NULL;
	if (drain != NULL)
		drain(c->arg);
}

void
shim_callout_fire(struct callout *c)
{

	mtx_lock(c->mtx);
	if (c->pending) {
		c->pending = 0;
		c->fn(c->arg);
	}
	mtx_unlock(c->mtx);
}

/* -- interfaces ------------------------------------------------------------- */

#define	SHIM_NIF	16
static struct ifnet *shim_ifnets[SHIM_NIF];
static uint16_t shim_ifgen[SHIM_NIF];

struct ifnet *
shim_if_attach(const char *name)
{
	struct ifnet *ifp;
	int i;

	for (i = 1; i < SHIM_NIF && shim_ifnets[i] != NULL; i++)
		;
	assert(i < SHIM_NIF);
	ifp = calloc(1, sizeof(*ifp));
	ifp->if_index = (uint16_t)i;
	ifp->if_idxgen = ++shim_ifgen[i];
	snprintf(ifp->if_xname, sizeof(ifp->if_xname), "%s", name);
	shim_ifnets[i] = ifp;
	return (ifp);
}

/* The interface goes, and its memory with it (if_free after detach). */
void
shim_if_detach(struct ifnet *ifp)
{

	shim_ifnets[ifp->if_index] = NULL;
	(free)(ifp);
}

void
m_rcvif_serialize(struct mbuf *m)
{
	struct ifnet *ifp = m->m_pkthdr.rcvif;
	uint16_t idx = ifp->if_index, gen = ifp->if_idxgen;

	m->m_pkthdr.rcvidx = idx;
	m->m_pkthdr.rcvgen = gen;
}

struct ifnet *
m_rcvif_restore(struct mbuf *m)
{
	uint16_t idx = m->m_pkthdr.rcvidx, gen = m->m_pkthdr.rcvgen;
	struct ifnet *ifp = NULL;

	if (idx < SHIM_NIF && shim_ifnets[idx] != NULL &&
	    shim_ifnets[idx]->if_idxgen == gen)
		ifp = shim_ifnets[idx];
	m->m_pkthdr.rcvif = ifp;
	return (ifp);
}

/* -- mbufs and tags ----------------------------------------------------------- */

void
m_freem(struct mbuf *m)
{
	struct m_tag *t;

	while ((t = SLIST_FIRST(&m->m_pkthdr.tags)) != NULL) {
		SLIST_REMOVE_HEAD(&m->m_pkthdr.tags, m_tag_link);
		(free)(t);
	}
	__atomic_fetch_add(&shim_mbufs_freed, 1, __ATOMIC_SEQ_CST);
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
m_tag_first(struct mbuf *m)
{

	return (SLIST_FIRST(&m->m_pkthdr.tags));
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

/* -- dummynet's tag and ecn_mark() ---------------------------------------------- */

int shim_dn_tag_errors;

/* As dn_tag_get(): dummynet's tag must be the packet's first. */
struct dn_pkt_tag *
dn_tag_get(struct mbuf *m)
{
	struct m_tag *t = m_tag_first(m);

	if (t == NULL || t->m_tag_cookie != MTAG_ABI_COMPAT ||
	    t->m_tag_id != PACKET_TAG_DUMMYNET) {
		shim_dn_tag_errors++;
		fprintf(stderr, "shim: packet on dummynet queue w/o dummynet "
		    "tag first\n");
		t = m_tag_locate(m, MTAG_ABI_COMPAT, PACKET_TAG_DUMMYNET, NULL);
		assert(t != NULL);
	}
	return ((struct dn_pkt_tag *)(t + 1));
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

/* Dummynet's ecn_mark(): CE on an ECN-capable packet, at the tag's offset. */
int
ecn_mark(struct mbuf *m)
{
	struct ip *ip = (struct ip *)(m->m_data + dn_tag_get(m)->iphdr_off);
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
		ip6 = (struct ip6_hdr *)ip;
		flow = ntohl(ip6->ip6_flow);
		if (((flow >> 20) & IPTOS_ECN_MASK) == 0)
			return (0);
		ip6->ip6_flow = htonl(flow | (IPTOS_ECN_MASK << 20));
		return (1);
	}
	return (0);
}

/* -- dummynet's scheduler list ------------------------------------------------ */

/*
 * struct dn_alg as FreeBSD 14 lays it out (amd64): the list links through
 * a CK_LIST_ENTRY at offset 144 (next, then pointer to the previous next)
 * and the descriptor is 160 bytes.  Written at those offsets, whatever the
 * module's own declaration says: a shorter descriptor is overrun here, as
 * it would be in the kernel (AddressSanitizer's redzone after the global is
 * the guard).
 */
#define	KDN_ALG_NAME		8
#define	KDN_ALG_ENQUEUE		48
#define	KDN_ALG_DEQUEUE		56
#define	KDN_ALG_REF_COUNT	136
#define	KDN_ALG_NEXT		144
#define	KDN_ALG_PREV		152
#define	KDN_ALG_SIZE		160
#define	KFIELD(p, off, t)	(*(t *)((char *)(p) + (off)))

static void *shim_schedlist;			/* CK_LIST_HEAD's first */
static _Alignas(8) char shim_fifo_alg[KDN_ALG_SIZE];	/* "FIFO", in-tree */
int shim_dn_ready;
int shim_dn_alg_loaded;
void (*shim_epoch_wait_hook)(void);
pthread_mutex_t shim_dn_lock = PTHREAD_MUTEX_INITIALIZER;

static void
shim_alg_insert_head(void *d)
{
	void *first = shim_schedlist;

	KFIELD(d, KDN_ALG_NEXT, void *) = first;
	if (first != NULL)
		KFIELD(first, KDN_ALG_PREV, void **) =
		    &KFIELD(d, KDN_ALG_NEXT, void *);
	shim_schedlist = d;
	KFIELD(d, KDN_ALG_PREV, void **) = &shim_schedlist;
}

static void
shim_alg_remove(void *d)
{
	void *next = KFIELD(d, KDN_ALG_NEXT, void *);

	if (next != NULL)
		KFIELD(next, KDN_ALG_PREV, void **) =
		    KFIELD(d, KDN_ALG_PREV, void **);
	*KFIELD(d, KDN_ALG_PREV, void **) = next;
}

struct dn_alg *
shim_find_sched(const char *name)
{
	void *d;

	for (d = shim_schedlist; d != NULL; d = KFIELD(d, KDN_ALG_NEXT, void *))
		if (strcmp(KFIELD(d, KDN_ALG_NAME, const char *), name) == 0)
			return (d);
	return (NULL);
}

int
shim_alg_ref_count(const struct dn_alg *d)
{

	return (KFIELD(d, KDN_ALG_REF_COUNT, int));
}

/* Dummynet's own SYSINITs (module event, then VNET init), in-tree FIFO. */
static void
shim_dn_sysinit(void)
{

	if (shim_dn_ready)
		return;
	KFIELD(shim_fifo_alg, KDN_ALG_NAME, const char *) = "FIFO";
	shim_alg_insert_head(shim_fifo_alg);
	shim_dn_ready = 1;
}

/*
 * Boot: the loader's modules' SYSINITs run sorted by subsystem and order;
 * dummynet's first, as its schedulers' DECLARE_DNSCHED_MODULE orders them.
 */
void
shim_dn_boot(void)
{

	if (shim_module.sub < SHIM_DN_SUB ||
	    (shim_module.sub == SHIM_DN_SUB &&
	    shim_module.order <= SHIM_DN_ORDER + 2)) {
		(void)shim_module.data->evhand(NULL, MOD_LOAD, NULL);
		shim_dn_sysinit();
	} else {
		shim_dn_sysinit();
		(void)shim_module.data->evhand(NULL, MOD_LOAD, NULL);
	}
}

int
dn_sched_modevent(module_t mod, int cmd, void *arg)
{
	void *d = arg;

	(void)mod;
	if (cmd == MOD_LOAD) {
		if (!shim_dn_ready) {
			fprintf(stderr, "shim: scheduler loaded before "
			    "dummynet's SYSINITs\n");
			return (1);
		}
		/* As load_dn_sched(): enqueue and dequeue are mandatory. */
		if (KFIELD(d, KDN_ALG_ENQUEUE, void *) == NULL ||
		    KFIELD(d, KDN_ALG_DEQUEUE, void *) == NULL)
			return (1);
		if (shim_find_sched(KFIELD(d, KDN_ALG_NAME, const char *)))
			return (1);
		shim_alg_insert_head(d);
		shim_dn_alg_loaded = 1;
		return (0);
	}
	if (shim_find_sched(KFIELD(d, KDN_ALG_NAME, const char *)) != d)
		return (EINVAL);
	if (KFIELD(d, KDN_ALG_REF_COUNT, int) != 0)
		return (EBUSY);
	shim_alg_remove(d);
	shim_dn_alg_loaded = 0;
	if (shim_epoch_wait_hook != NULL)	/* NET_EPOCH_WAIT() sleeps */
		shim_epoch_wait_hook();
	return (0);
}

/* -- dummynet's schedulers and instances ---------------------------------------- */

static void
shim_set_oid(struct dn_id *o, int type, int len)
{

	o->type = (uint8_t)type;
	o->len = (uint16_t)len;
	o->subtype = 0;
}

/*
 * As config_sched() for a new scheduler: its internal flowset (fs_nr N +
 * DN_MAX_ID, made or reused) attached first (fsk_attach() calls new_fsk),
 * then the scheduler's config.
 */
static struct dn_schk *
shim_sched_new(int nr, struct dn_alg *fp, struct dn_fsk *fs)
{
	struct dn_schk *s;

	s = calloc(1, sizeof(*s) + fp->schk_datalen);
	shim_set_oid(&s->link.oid, DN_LINK, sizeof(s->link));
	shim_set_oid(&s->sch.oid, DN_SCH, sizeof(s->sch));
	s->sch.sched_nr = (uint32_t)nr;
	s->fp = fp;
	s->fs = fs;
	fs->sched = s;
	if (fp->new_fsk != NULL)
		fp->new_fsk(fs);
	if (fp->config != NULL)
		fp->config(s);
	return (s);
}

/* 'dnctl sched N config type T': a new scheduler and its internal flowset. */
struct dn_schk *
shim_sched_config(int nr, const char *type, struct dn_aqm *aqm)
{
	struct dn_alg *fp = shim_find_sched(type);
	struct dn_fsk *fs;

	assert(fp != NULL);
	fs = calloc(1, sizeof(*fs));
	shim_set_oid(&fs->fs.oid, DN_FS, sizeof(fs->fs));
	fs->fs.fs_nr = (uint32_t)nr + 65536;
	fs->fs.sched_nr = (uint32_t)nr;
	fs->aqmfp = aqm;
	return (shim_sched_new(nr, fp, fs));
}

/* As si_new(): private area zeroed, new_sched, then a flowset AQM's init. */
struct dn_sch_inst *
shim_si_find(struct dn_schk *s)
{
	struct dn_alg *fp = s->fp;
	struct dn_sch_inst *si;

	if (s->siht != NULL)
		return ((struct dn_sch_inst *)s->siht);
	si = calloc(1, sizeof(*si) + fp->si_datalen);
	shim_set_oid(&si->ni.oid, DN_SCH_I, sizeof(struct dn_flow));
	shim_set_oid(&si->dline.oid, DN_DELAY_LINE, sizeof(struct delay_line));
	si->ni.oid.id = si->dline.oid.id = (uint32_t)-1;	/* not in the heap */
	si->sched = s;
	si->dline.si = si;
	if (fp->new_sched != NULL && fp->new_sched(si) != 0) {
		(free)(si);
		return (NULL);
	}
	if (!(fp->flags & DN_MULTIQUEUE) && s->fs->aqmfp != NULL &&
	    s->fs->aqmfp->init != NULL &&
	    s->fs->aqmfp->init((struct dn_queue *)(si + 1)) != 0) {
		(free)(si);		/* as si_new(): no free_sched */
		return (NULL);
	}
	s->siht = (struct dn_ht *)si;
	return (si);
}

/* As si_destroy(): the AQM's cleanup on (si + 1), then free_sched. */
void
shim_si_destroy(struct dn_schk *s)
{
	struct dn_sch_inst *si = (struct dn_sch_inst *)s->siht;
	struct dn_queue *q;

	if (si == NULL)
		return;
	q = (struct dn_queue *)(si + 1);
	if (!(s->fp->flags & DN_MULTIQUEUE) && q->aqm_status != NULL &&
	    q->fs->aqmfp != NULL && q->fs->aqmfp->cleanup != NULL)
		q->fs->aqmfp->cleanup(q);
	if (s->fp->free_sched != NULL)
		s->fp->free_sched(si);
	memset(si, 0, sizeof(*si));
	(free)(si);
	s->siht = NULL;
}

/* As drain_scheduler_cb() for a single-queue scheduler. */
int
shim_si_drain(struct dn_schk *s)
{
	struct dn_sch_inst *si = (struct dn_sch_inst *)s->siht;

	if (si == NULL || (si->kflags & 0x0020) || si->dline.mq.head != NULL)
		return (0);
	if (((struct dn_queue *)(si + 1))->ni.length != 0)
		return (0);
	shim_si_destroy(s);
	return (1);
}

/*
 * As fsk_detach() of the internal flowset: aqm_cleanup_deconfig_fs() runs
 * the AQM's cleanup on the queue at (si + 1) of a live instance (whatever
 * its aqm_status), then the scheduler's free_fsk.
 */
static void
shim_fs_detach(struct dn_schk *s)
{
	struct dn_sch_inst *si = (struct dn_sch_inst *)s->siht;
	struct dn_fsk *fs = s->fs;

	if (!(s->fp->flags & DN_MULTIQUEUE) && si != NULL &&
	    fs->aqmfp != NULL && fs->aqmfp->cleanup != NULL)
		fs->aqmfp->cleanup((struct dn_queue *)(si + 1));
	if (s->fp->free_fsk != NULL)
		s->fp->free_fsk(fs);
	fs->sched = NULL;
}

/* As schk_delete_cb(): its instance, then the scheduler's destroy. */
static void
shim_schk_delete(struct dn_schk *s)
{

	shim_si_destroy(s);
	if (s->fp->destroy != NULL)
		s->fp->destroy(s);
	memset(s, 0, sizeof(*s));
	(free)(s);
}

/*
 * 'dnctl sched N delete', as delete_schk(): the internal flowset is
 * detached and freed first, then the instance and the scheduler go (the
 * queue at (si + 1) still points to the freed flowset, as in the kernel).
 */
void
shim_sched_delete(struct dn_schk *s)
{
	struct dn_fsk *fs = s->fs;

	shim_fs_detach(s);
	memset(fs, 0, sizeof(*fs));
	(free)(fs);
	shim_schk_delete(s);
}

/*
 * A changed 'dnctl sched N config': the old scheduler goes, traffic and
 * all, and the new one reuses the internal flowset, as config_sched() does.
 */
struct dn_schk *
shim_sched_reconfigure(struct dn_schk *s)
{
	int nr = (int)s->sch.sched_nr;
	struct dn_alg *fp = s->fp;
	struct dn_fsk *fs = s->fs;

	shim_fs_detach(s);
	shim_schk_delete(s);
	return (shim_sched_new(nr, fp, fs));
}

/* As dummynet_io(): its tag first, then the scheduler's enqueue. */
int
shim_dn_io(struct dn_schk *s, struct mbuf *m, int layer2)
{
	struct dn_sch_inst *si;
	struct dn_pkt_tag *dt;
	struct m_tag *t;

	/* Dummynet's allocations never fail here: the module's are tested. */
	t = calloc(1, sizeof(*t) + sizeof(*dt));
	t->m_tag_cookie = MTAG_ABI_COMPAT;
	t->m_tag_id = PACKET_TAG_DUMMYNET;
	t->m_tag_len = sizeof(*dt);
	m_tag_prepend(m, t);
	dt = (struct dn_pkt_tag *)(t + 1);
	dt->dn_dir = layer2 ? 0x4 : 0;		/* PROTO_LAYER2 */
	dt->iphdr_off = layer2 ? ETHER_HDR_LEN : 0;
	si = shim_si_find(s);
	if (si == NULL) {
		m_freem(m);
		return (1);
	}
	return (s->fp->enqueue(si, NULL, m));
}

/*
 * As serve_sched() and dummynet_send(): the dequeued packet's tag is read
 * (dn_tag_get), and the stack it goes to reads its receiving interface.
 */
struct mbuf *
shim_dn_serve(struct dn_schk *s)
{
	struct dn_sch_inst *si = (struct dn_sch_inst *)s->siht;
	volatile uint16_t idx;
	struct mbuf *m;

	if (si == NULL)
		return (NULL);
	m = s->fp->dequeue(si);
	if (m == NULL)
		return (NULL);
	dn_tag_get(m)->output_time = shim_now_ns;
	if (m->m_pkthdr.rcvif != NULL)
		idx = m->m_pkthdr.rcvif->if_index;
	(void)idx;
	return (m);
}

/* -- devices and the pager ---------------------------------------------------- */

static struct cdev shim_cdev;
static struct cdevsw *shim_cdevsw;

void
make_dev_args_init(struct make_dev_args *a)
{

	memset(a, 0, sizeof(*a));
}

int
make_dev_s(struct make_dev_args *a, struct cdev **dev, const char *fmt, ...)
{

	if (shim_cdev.alive)
		return (EEXIST);
	shim_cdev.mode = a->mda_mode;
	shim_cdev.uid = a->mda_uid;
	shim_cdev.gid = a->mda_gid;
	shim_cdev.name = fmt;
	shim_cdev.alive = 1;
	shim_cdevsw = a->mda_devsw;
	*dev = &shim_cdev;
	return (0);
}

void
destroy_dev(struct cdev *dev)
{

	assert(dev == &shim_cdev && dev->alive);
	dev->alive = 0;
}

int
shim_dev_ioctl(u_long cmd, void *arg)
{

	if (!shim_cdev.alive)
		return (ENXIO);
	return (shim_cdevsw->d_ioctl(&shim_cdev, cmd, arg, 0, curthread));
}

int
shim_dev_mmap(vm_size_t size, vm_object_t *obj)
{
	vm_ooffset_t off = 0;

	if (!shim_cdev.alive)
		return (ENXIO);
	return (shim_cdevsw->d_mmap_single(&shim_cdev, &off, size, obj, 3));
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

/*
 * kmem_malloc: heap memory, or, with AQM_LLM_SHIM_REGION set to a path, a
 * shared file mapping there, so that a real aqmllmd can map the region.
 */
vm_offset_t
kmem_malloc(vm_size_t size, int flags)
{
	const char *path = getenv("AQM_LLM_SHIM_REGION");
	void *p;
	int fd;

	if (path != NULL) {
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)size) != 0)
			return (0);
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		return (p == MAP_FAILED ? 0 : (vm_offset_t)p);
	}
	p = aligned_alloc(4096, size);
	if (p != NULL && (flags & M_ZERO))
		memset(p, 0, size);
	return ((vm_offset_t)p);
}

void
kmem_free(void *p, vm_size_t size)
{

	if (getenv("AQM_LLM_SHIM_REGION") != NULL)
		munmap(p, size);
	else
		(free)(p);
}

/* -- sysctl ------------------------------------------------------------------- */

struct sysctl_oid {
	const char	*name;
	shim_sysctl_fn	*fn;
	void		*arg1;
	intmax_t	 arg2;
	int		 kind;		/* 0: node or handler, 1: int */
	int		 live;
};
#define	SHIM_NOIDS	256
static struct sysctl_oid shim_oids[SHIM_NOIDS];
static pthread_rwlock_t shim_sysctl_lock = PTHREAD_RWLOCK_INITIALIZER;

struct sysctl_oid *
shim_sysctl_add(struct sysctl_ctx_list *ctx, const char *name,
    shim_sysctl_fn *fn, void *arg1, intmax_t arg2, int kind)
{
	struct sysctl_oid *o = NULL;
	int i;

	pthread_rwlock_wrlock(&shim_sysctl_lock);
	for (i = 0; i < SHIM_NOIDS; i++) {
		if (!shim_oids[i].live) {
			o = &shim_oids[i];
			*o = (struct sysctl_oid){ name, fn, arg1, arg2, kind, 1 };
			break;
		}
	}
	pthread_rwlock_unlock(&shim_sysctl_lock);
	assert(o != NULL);
	if (ctx != NULL) {
		assert(ctx->n < (int)(sizeof(ctx->oids) / sizeof(ctx->oids[0])));
		ctx->oids[ctx->n++] = o;
	}
	return (o);
}

void
sysctl_ctx_init(struct sysctl_ctx_list *ctx)
{

	memset(ctx, 0, sizeof(*ctx));
}

/* Removal waits for handlers running (the kernel's sysctl lock). */
int
sysctl_ctx_free(struct sysctl_ctx_list *ctx)
{
	int i;

	pthread_rwlock_wrlock(&shim_sysctl_lock);
	for (i = 0; i < ctx->n; i++)
		ctx->oids[i]->live = 0;
	ctx->n = 0;
	pthread_rwlock_unlock(&shim_sysctl_lock);
	return (0);
}

int
shim_sysctl(const char *name, uint64_t *oldp, const uint64_t *newp)
{
	struct sysctl_req req;
	struct sysctl_oid *o = NULL;
	int error, i;

	memset(&req, 0, sizeof(req));
	if (newp != NULL) {
		req.newptr = &req;
		req.newval = *newp;
	}
	pthread_rwlock_rdlock(&shim_sysctl_lock);
	for (i = 0; i < SHIM_NOIDS; i++)
		if (shim_oids[i].live && strcmp(shim_oids[i].name, name) == 0)
			o = &shim_oids[i];
	if (o == NULL)
		error = ENOENT;
	else if (o->kind == 1) {
		req.oldval = (uint64_t)*(int *)o->arg1;
		error = newp != NULL ? EPERM : 0;
	} else if (o->fn == NULL)
		error = EISDIR;
	else
		error = o->fn(o, o->arg1, o->arg2, &req);
	pthread_rwlock_unlock(&shim_sysctl_lock);
	if (oldp != NULL)
		*oldp = req.oldval;
	return (error);
}

int
shim_sysctl_count(void)
{
	int i, n = 0;

	pthread_rwlock_rdlock(&shim_sysctl_lock);
	for (i = 0; i < SHIM_NOIDS; i++)
		n += shim_oids[i].live;
	pthread_rwlock_unlock(&shim_sysctl_lock);
	return (n);
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
	return (req->newptr != NULL ? EPERM : 0);
}
