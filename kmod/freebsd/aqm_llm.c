/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_llm: a dummynet scheduler hosting the AQM-LLM core, and /dev/aqm_llm.
 *
 * A scheduler rather than an AQM module: DualPI2 owns two queues (L and C)
 * and chooses which to serve, which only a scheduler can.  It is selected by
 * name with the stock tools:
 *
 *	dnctl pipe 1 config bw 100Mbit/s
 *	dnctl sched 1 config pipe 1 type aqm_llm
 *	dnctl queue 1 config sched 1
 *
 * Each instance runs one portable core (kmod/core) on two mbuf queues; each
 * packet carries its struct aqm_pkt in an mbuf tag.  /dev/aqm_llm maps the
 * channel region (allocated once, at load) to aqmllmd, and its ioctls attach
 * the region to an instance, read counters and get or set parameters.
 *
 * Locking: dummynet calls enqueue/dequeue/new_sched/free_sched with its own
 * lock held.  Each instance has a mutex for its core, taken in the packet
 * path and by its tick callout; the module mutex protects the instance list
 * and the attachment.  Order: dummynet lock, module mutex, instance mutex.
 * Nothing here sleeps under a lock; allocations in dummynet context are
 * M_NOWAIT.
 */

#include "aqm_llm_os.h"

#include "aqm_core.h"
#include "aqm_llm_ioctl.h"

#define	AQM_LLM_NAME		"aqm_llm"
#define	AQM_LLM_TYPE		0x41514d4c	/* unique dummynet type id */
#define	MTAG_AQM_LLM		1745913001	/* mbuf tag cookie */
#define	AQM_LLM_TICK_SBT	(10 * SBT_1MS)

static MALLOC_DEFINE(M_AQMLLM, "aqm_llm", "AQM-LLM scheduler");

#ifndef AQM_LLM_HARNESS
/* aqm_bridge.channel.AQMLLM_ATTACH hard-codes this number. */
AQM_STATIC_ASSERT(AQMLLM_ATTACH == 0x80045102ul, "AQMLLM_ATTACH number");
#endif

struct aqm_llm_state {
	struct mtx		 mtx;
	struct callout		 tick;
	struct aqm_core		*core;
	struct mq		 q[AQM_NQUEUES];
	int			 sched_nr;
	int			 dying;
	LIST_ENTRY(aqm_llm_state) link;
};

/* The per-instance area dummynet allocates after struct dn_sch_inst. */
struct aqm_llm_si {
	struct dn_sch_inst	 _si;
	struct aqm_llm_state	*st;
};

static struct mtx aqm_llm_mtx;
static LIST_HEAD(, aqm_llm_state) aqm_llm_list =
    LIST_HEAD_INITIALIZER(aqm_llm_list);
static struct aqm_llm_state *aqm_llm_attached;
static int aqm_llm_instances;
static volatile u_int aqm_llm_mapped;
static volatile u_int aqm_llm_pending_frees;
static void *aqm_llm_region;
static uint64_t aqm_llm_region_size;
static struct aqm_chan aqm_llm_chan;
static struct cdev *aqm_llm_cdev;
static struct aqm_params aqm_llm_defaults;

static u_int aqm_llm_state_ring = 65536;
static u_int aqm_llm_verdict_ring = 65536;

static uint64_t
aqm_llm_now(void)
{

	return ((uint64_t)sbttons(sbinuptime()));
}

/* -- packet metadata ------------------------------------------------------- */

/*
 * ECN codepoint of a layer-3 packet (dummynet's usual case).  A packet
 * whose IP header is not in the first mbuf, or a layer-2 frame, reads as
 * Not-ECT and goes to the classic queue.
 */
static uint8_t
aqm_llm_ecn(struct mbuf *m)
{
	struct ip *ip;
	struct ip6_hdr *ip6;

	if (m->m_len < (int)sizeof(struct ip))
		return (AQM_ECN_NOT_ECT);
	ip = mtod(m, struct ip *);
	if (ip->ip_v == IPVERSION)
		return (ip->ip_tos & IPTOS_ECN_MASK);
	if (ip->ip_v == (IPV6_VERSION >> 4) &&
	    m->m_len >= (int)sizeof(struct ip6_hdr)) {
		ip6 = mtod(m, struct ip6_hdr *);
		return ((ntohl(ip6->ip6_flow) >> 20) & IPTOS_ECN_MASK);
	}
	return (AQM_ECN_NOT_ECT);
}

static struct aqm_pkt *
aqm_llm_meta(struct mbuf *m, struct m_tag **tagp)
{
	struct m_tag *t;

	t = m_tag_locate(m, MTAG_AQM_LLM, 0, NULL);
	if (tagp != NULL)
		*tagp = t;
	return (t != NULL ? (struct aqm_pkt *)(t + 1) : NULL);
}

static uint64_t
aqm_llm_head_ts(struct aqm_llm_state *st, int q)
{
	struct aqm_pkt *p;

	if (st->q[q].head == NULL)
		return (0);
	p = aqm_llm_meta(st->q[q].head, NULL);
	return (p != NULL ? p->ts_ns : 0);
}

static void
aqm_llm_append(struct mq *q, struct mbuf *m)
{

	m->m_nextpkt = NULL;
	if (q->head == NULL)
		q->head = m;
	else
		q->tail->m_nextpkt = m;
	q->tail = m;
	q->count++;
}

static struct mbuf *
aqm_llm_pop(struct mq *q)
{
	struct mbuf *m = q->head;

	if (m != NULL) {
		q->head = m->m_nextpkt;
		if (q->head == NULL)
			q->tail = NULL;
		m->m_nextpkt = NULL;
		q->count--;
	}
	return (m);
}

/* -- scheduler callbacks ----------------------------------------------------- */

static int
aqm_llm_enqueue(struct dn_sch_inst *si, struct dn_queue *q, struct mbuf *m)
{
	struct aqm_llm_state *st = ((struct aqm_llm_si *)si)->st;
	struct aqm_pkt pkt;
	struct m_tag *t;
	int qi;

	(void)q;		/* one pair of queues for every flow */
	mtx_lock(&st->mtx);
	if (aqm_enqueue(st->core, aqm_llm_now(), m->m_pkthdr.len,
	    aqm_llm_ecn(m), &pkt) == AQM_V_DROP) {
		mtx_unlock(&st->mtx);
		m_freem(m);
		return (1);
	}
	qi = pkt.queue;
	t = m_tag_alloc(MTAG_AQM_LLM, 0, sizeof(pkt), M_NOWAIT);
	if (t == NULL) {
		/* No tag, no way to find its metadata at dequeue. */
		aqm_forget(st->core, &pkt, aqm_llm_head_ts(st, qi));
		mtx_unlock(&st->mtx);
		m_freem(m);
		return (1);
	}
	memcpy(t + 1, &pkt, sizeof(pkt));
	m_tag_prepend(m, t);
	aqm_llm_append(&st->q[qi], m);
	mtx_unlock(&st->mtx);
	return (0);
}

static struct mbuf *
aqm_llm_dequeue(struct dn_sch_inst *si)
{
	struct aqm_llm_state *st = ((struct aqm_llm_si *)si)->st;
	struct aqm_decision d;
	struct aqm_pkt pkt, *p;
	struct m_tag *t;
	struct mbuf *m;
	uint64_t now;
	int qi;

	mtx_lock(&st->mtx);
	now = aqm_llm_now();
	for (;;) {
		qi = aqm_select(st->core, now);
		if (qi == AQM_SELECT_NONE) {
			m = NULL;
			break;
		}
		m = aqm_llm_pop(&st->q[qi]);
		if (m == NULL)		/* cannot happen: the core counts */
			break;
		p = aqm_llm_meta(m, &t);
		if (p == NULL) {
			m_freem(m);
			continue;
		}
		pkt = *p;
		m_tag_delete(m, t);
		aqm_dequeue(st->core, now, &pkt, aqm_llm_head_ts(st, qi), &d);
		if (d.verdict == AQM_V_DROP) {
			m_freem(m);
			continue;
		}
		if (d.verdict == AQM_V_MARK)
			(void)ecn_mark(m);
		break;
	}
	mtx_unlock(&st->mtx);
	return (m);
}

static void
aqm_llm_tick(void *arg)
{
	struct aqm_llm_state *st = arg;

	/* Called with st->mtx held (callout_init_mtx). */
	if (st->dying)
		return;
	aqm_tick(st->core, aqm_llm_now());
	callout_schedule_sbt(&st->tick, AQM_LLM_TICK_SBT, 0, 0);
}

static void
aqm_llm_free_state(struct aqm_llm_state *st)
{

	mtx_destroy(&st->mtx);
	free(st->core, M_AQMLLM);
	free(st, M_AQMLLM);
	atomic_subtract_int(&aqm_llm_pending_frees, 1);
}

static void
aqm_llm_drained(void *arg)
{

	aqm_llm_free_state(arg);
}

static int
aqm_llm_new_sched(struct dn_sch_inst *si)
{
	struct aqm_llm_si *asi = (struct aqm_llm_si *)si;
	struct aqm_llm_state *st;

	st = malloc(sizeof(*st), M_AQMLLM, M_NOWAIT | M_ZERO);
	if (st == NULL)
		return (ENOMEM);
	st->core = malloc(aqm_core_size(), M_AQMLLM, M_NOWAIT | M_ZERO);
	if (st->core == NULL) {
		free(st, M_AQMLLM);
		return (ENOMEM);
	}
	mtx_lock(&aqm_llm_mtx);
	(void)aqm_core_init(st->core, &aqm_llm_defaults,
	    (uint64_t)(uintptr_t)st ^ aqm_llm_now(), aqm_llm_now());
	st->sched_nr = si->sched != NULL ? (int)si->sched->sch.sched_nr : -1;
	LIST_INSERT_HEAD(&aqm_llm_list, st, link);
	aqm_llm_instances++;
	mtx_unlock(&aqm_llm_mtx);
	mtx_init(&st->mtx, "aqm_llm inst", NULL, MTX_DEF);
	callout_init_mtx(&st->tick, &st->mtx, 0);
	mtx_lock(&st->mtx);
	callout_reset_sbt(&st->tick, AQM_LLM_TICK_SBT, 0, aqm_llm_tick, st, 0);
	mtx_unlock(&st->mtx);
	asi->st = st;
	return (0);
}

static int
aqm_llm_free_sched(struct dn_sch_inst *si)
{
	struct aqm_llm_si *asi = (struct aqm_llm_si *)si;
	struct aqm_llm_state *st = asi->st;
	struct mbuf *m;
	u_int q;
	int later;

	if (st == NULL)
		return (0);
	mtx_lock(&aqm_llm_mtx);
	LIST_REMOVE(st, link);
	aqm_llm_instances--;
	atomic_add_int(&aqm_llm_pending_frees, 1);
	mtx_lock(&st->mtx);
	if (aqm_llm_attached == st)
		aqm_llm_attached = NULL;
	mtx_unlock(&aqm_llm_mtx);
	st->dying = 1;
	aqm_detach(st->core);
	for (q = 0; q < AQM_NQUEUES; q++)
		while ((m = aqm_llm_pop(&st->q[q])) != NULL)
			m_freem(m);
	/*
	 * The instance's memory goes when we return, but the callout may be
	 * running: free our state once it has drained, never waiting here.
	 */
	later = callout_async_drain(&st->tick, aqm_llm_drained) == 0;
	mtx_unlock(&st->mtx);
	if (!later)
		aqm_llm_free_state(st);
	asi->st = NULL;
	return (0);
}

static struct dn_alg aqm_llm_desc = {
	.type = AQM_LLM_TYPE,
	.name = AQM_LLM_NAME,
	.flags = 0,
	.schk_datalen = 0,
	.si_datalen = sizeof(struct aqm_llm_si) - sizeof(struct dn_sch_inst),
	.q_datalen = 0,
	.enqueue = aqm_llm_enqueue,
	.dequeue = aqm_llm_dequeue,
	.new_sched = aqm_llm_new_sched,
	.free_sched = aqm_llm_free_sched,
};

/* -- /dev/aqm_llm ------------------------------------------------------------- */

static struct aqm_llm_state *
aqm_llm_find(int sched_nr)
{
	struct aqm_llm_state *st;

	LIST_FOREACH(st, &aqm_llm_list, link)
		if (st->sched_nr == sched_nr)
			return (st);
	return (NULL);
}

static int
aqm_llm_ioctl(struct cdev *dev, u_long cmd, caddr_t data, int flag,
    struct thread *td)
{
	struct aqm_llm_counters_req *cr;
	struct aqm_llm_params_req *pr;
	struct aqm_llm_info *info;
	struct aqm_llm_state *st;
	int error = 0, rc;

	(void)dev;
	(void)flag;
	(void)td;
	mtx_lock(&aqm_llm_mtx);
	switch (cmd) {
	case AQMLLM_INFO:
		info = (struct aqm_llm_info *)data;
		memset(info, 0, sizeof(*info));
		info->abi_version = AQM_CHAN_ABI_VERSION;
		info->state_ring_entries = aqm_llm_state_ring;
		info->verdict_ring_entries = aqm_llm_verdict_ring;
		info->instances = aqm_llm_instances;
		info->region_size = aqm_llm_region_size;
		info->attached_sched = aqm_llm_attached != NULL ?
		    aqm_llm_attached->sched_nr : -1;
		break;
	case AQMLLM_ATTACH:
		st = aqm_llm_find(*(int32_t *)data);
		if (st == NULL) {
			error = ENOENT;
			break;
		}
		if (aqm_llm_attached != NULL) {
			mtx_lock(&aqm_llm_attached->mtx);
			aqm_detach(aqm_llm_attached->core);
			mtx_unlock(&aqm_llm_attached->mtx);
			aqm_llm_attached = NULL;
		}
		mtx_lock(&st->mtx);
		rc = aqm_attach(st->core, aqm_llm_region, aqm_llm_region_size,
		    aqm_llm_now());
		mtx_unlock(&st->mtx);
		if (rc != AQM_OK)
			error = EINVAL;
		else
			aqm_llm_attached = st;
		break;
	case AQMLLM_DETACH:
		if (aqm_llm_attached != NULL) {
			mtx_lock(&aqm_llm_attached->mtx);
			aqm_detach(aqm_llm_attached->core);
			mtx_unlock(&aqm_llm_attached->mtx);
			aqm_llm_attached = NULL;
		}
		break;
	case AQMLLM_COUNTERS:
		cr = (struct aqm_llm_counters_req *)data;
		if ((st = aqm_llm_find(cr->sched)) == NULL) {
			error = ENOENT;
			break;
		}
		mtx_lock(&st->mtx);
		aqm_counters_get(st->core, &cr->counters);
		cr->prob_base = aqm_prob_base(st->core);
		mtx_unlock(&st->mtx);
		break;
	case AQMLLM_GETPARAMS:
	case AQMLLM_SETPARAMS:
		pr = (struct aqm_llm_params_req *)data;
		if ((st = aqm_llm_find(pr->sched)) == NULL) {
			error = ENOENT;
			break;
		}
		mtx_lock(&st->mtx);
		if (cmd == AQMLLM_SETPARAMS &&
		    aqm_core_set_params(st->core, &pr->params) != AQM_OK)
			error = EINVAL;		/* nothing changed */
		aqm_core_get_params(st->core, &pr->params);
		mtx_unlock(&st->mtx);
		break;
	default:
		error = ENOTTY;
		break;
	}
	mtx_unlock(&aqm_llm_mtx);
	return (error);
}

static int
aqm_llm_pg_ctor(void *handle, vm_ooffset_t size, vm_prot_t prot,
    vm_ooffset_t foff, struct ucred *cred, u_short *color)
{

	(void)handle;
	(void)size;
	(void)prot;
	(void)foff;
	(void)cred;
	*color = 0;
	atomic_add_int(&aqm_llm_mapped, 1);
	return (0);
}

static void
aqm_llm_pg_dtor(void *handle)
{

	(void)handle;
	atomic_subtract_int(&aqm_llm_mapped, 1);
}

/* Hand out the kernel pages of the region, one fault at a time. */
static int
aqm_llm_pg_fault(vm_object_t object, vm_ooffset_t offset, int prot,
    vm_page_t *mres)
{
	vm_memattr_t memattr = object->memattr;
	vm_paddr_t paddr;
	vm_page_t page;

	(void)prot;
	if (offset >= (vm_ooffset_t)aqm_llm_region_size)
		return (VM_PAGER_FAIL);
	paddr = vtophys((vm_offset_t)aqm_llm_region + offset);
	if (((*mres)->flags & PG_FICTITIOUS) != 0) {
		page = *mres;
		vm_page_updatefake(page, paddr, memattr);
	} else {
		VM_OBJECT_WUNLOCK(object);
		page = vm_page_getfake(paddr, memattr);
		VM_OBJECT_WLOCK(object);
		vm_page_replace(page, object, (*mres)->pindex, *mres);
		*mres = page;
	}
	vm_page_valid(page);
	return (VM_PAGER_OK);
}

static struct cdev_pager_ops aqm_llm_pager_ops = {
	.cdev_pg_ctor = aqm_llm_pg_ctor,
	.cdev_pg_dtor = aqm_llm_pg_dtor,
	.cdev_pg_fault = aqm_llm_pg_fault,
};

static int
aqm_llm_mmap_single(struct cdev *cdev, vm_ooffset_t *foff, vm_size_t size,
    vm_object_t *objp, int nprot)
{
	vm_object_t obj;

	if (*foff != 0 || size > round_page(aqm_llm_region_size))
		return (EINVAL);
	obj = cdev_pager_allocate(cdev, OBJT_DEVICE, &aqm_llm_pager_ops,
	    size, nprot, *foff, curthread->td_ucred);
	if (obj == NULL)
		return (EINVAL);
	*objp = obj;
	return (0);
}

static struct cdevsw aqm_llm_cdevsw = {
	.d_version = D_VERSION,
	.d_name = AQM_LLM_NAME,
	.d_ioctl = aqm_llm_ioctl,
	.d_mmap_single = aqm_llm_mmap_single,
};

/* -- sysctl net.inet.ip.dummynet.aqm_llm ------------------------------------ */

SYSCTL_DECL(_net_inet_ip_dummynet);
static SYSCTL_NODE(_net_inet_ip_dummynet, OID_AUTO, aqm_llm,
    CTLFLAG_RW | CTLFLAG_MPSAFE, 0, "AQM-LLM scheduler");

/* A default for new instances: refused (EINVAL) if the set is invalid. */
static int
aqm_llm_sysctl_default(SYSCTL_HANDLER_ARGS)
{
	struct aqm_params p;
	uint32_t *field;
	u_int value;
	int error;

	(void)arg1;
	mtx_lock(&aqm_llm_mtx);
	p = aqm_llm_defaults;
	mtx_unlock(&aqm_llm_mtx);
	field = (uint32_t *)((char *)&p + arg2);
	value = *field;
	error = sysctl_handle_int(oidp, &value, 0, req);
	if (error != 0 || req->newptr == NULL)
		return (error);
	*field = value;
	if (aqm_params_validate(&p) != AQM_OK)
		return (EINVAL);
	mtx_lock(&aqm_llm_mtx);
	aqm_llm_defaults = p;
	mtx_unlock(&aqm_llm_mtx);
	return (0);
}

#define	AQM_LLM_DEFAULT(name, descr)					\
	SYSCTL_PROC(_net_inet_ip_dummynet_aqm_llm, OID_AUTO, name,	\
	    CTLTYPE_UINT | CTLFLAG_RW | CTLFLAG_MPSAFE, NULL,		\
	    __offsetof(struct aqm_params, name), aqm_llm_sysctl_default,	\
	    "IU", descr)

AQM_LLM_DEFAULT(limit_pkts, "queue limit, packets (both queues)");
AQM_LLM_DEFAULT(limit_bytes, "queue limit, bytes (both queues)");
AQM_LLM_DEFAULT(target_ns, "PI target delay, ns");
AQM_LLM_DEFAULT(tupdate_ns, "PI update interval, ns");
AQM_LLM_DEFAULT(alpha_mhz, "PI integral gain, mHz");
AQM_LLM_DEFAULT(beta_mhz, "PI proportional gain, mHz");
AQM_LLM_DEFAULT(step_thresh_ns, "L4S step marking threshold, ns");
AQM_LLM_DEFAULT(coupling_factor, "coupling factor k");
AQM_LLM_DEFAULT(c_protection_pct, "classic WRR weight, percent");
AQM_LLM_DEFAULT(mtu_bytes, "MTU for the 2-MTU floor and WRR credit");
AQM_LLM_DEFAULT(drop_overload, "drop classic packets in overload");
AQM_LLM_DEFAULT(verdict_guard, "DualPI2 over a verdict: 0 none, 1 step, 2 all");

/* A counter summed over all instances. */
static int
aqm_llm_sysctl_counter(SYSCTL_HANDLER_ARGS)
{
	struct aqm_llm_state *st;
	struct aqm_counters c;
	uint64_t sum = 0;

	(void)arg1;
	mtx_lock(&aqm_llm_mtx);
	LIST_FOREACH(st, &aqm_llm_list, link) {
		mtx_lock(&st->mtx);
		aqm_counters_get(st->core, &c);
		mtx_unlock(&st->mtx);
		sum += *(uint64_t *)((char *)&c + arg2);
	}
	mtx_unlock(&aqm_llm_mtx);
	return (sysctl_handle_64(oidp, &sum, 0, req));
}

#define	AQM_LLM_COUNTER(name, descr)					\
	SYSCTL_PROC(_net_inet_ip_dummynet_aqm_llm, OID_AUTO, name,	\
	    CTLTYPE_U64 | CTLFLAG_RD | CTLFLAG_MPSAFE, NULL,		\
	    __offsetof(struct aqm_counters, name), aqm_llm_sysctl_counter,	\
	    "QU", descr)

AQM_LLM_COUNTER(decisions_model, "dequeues decided by a model verdict");
AQM_LLM_COUNTER(decisions_fallback, "dequeues decided by DualPI2");
AQM_LLM_COUNTER(verdicts_applied, "verdicts applied");
AQM_LLM_COUNTER(verdicts_late, "verdicts that came after their packet");
AQM_LLM_COUNTER(verdicts_bad, "verdicts with unknown seq or action");
AQM_LLM_COUNTER(states_published, "state records published");
AQM_LLM_COUNTER(states_lost, "state records lost to a full ring");
AQM_LLM_COUNTER(step_marks, "L4S step marks");
AQM_LLM_COUNTER(channel_errors, "corrupted channel seen");

SYSCTL_INT(_net_inet_ip_dummynet_aqm_llm, OID_AUTO, instances,
    CTLFLAG_RD, &aqm_llm_instances, 0, "scheduler instances");
SYSCTL_UINT(_net_inet_ip_dummynet_aqm_llm, OID_AUTO, state_ring,
    CTLFLAG_RDTUN, &aqm_llm_state_ring, 0, "state ring entries (tunable)");
SYSCTL_UINT(_net_inet_ip_dummynet_aqm_llm, OID_AUTO, verdict_ring,
    CTLFLAG_RDTUN, &aqm_llm_verdict_ring, 0, "verdict ring entries (tunable)");

/* -- module ------------------------------------------------------------------ */

static int
aqm_llm_load(module_t mod)
{
	struct make_dev_args args;
	int error;

	if (!aqm_ring_entries_valid(aqm_llm_state_ring) ||
	    !aqm_ring_entries_valid(aqm_llm_verdict_ring)) {
		printf("aqm_llm: ring sizes must be powers of two in [%u, %u]\n",
		    AQM_RING_MIN_ENTRIES, AQM_RING_MAX_ENTRIES);
		return (EINVAL);
	}
	aqm_params_default(&aqm_llm_defaults);
	mtx_init(&aqm_llm_mtx, "aqm_llm", NULL, MTX_DEF);
	aqm_llm_region_size = aqm_chan_region_size(aqm_llm_state_ring,
	    aqm_llm_verdict_ring);
	aqm_llm_region = (void *)kmem_malloc(round_page(aqm_llm_region_size),
	    M_WAITOK | M_ZERO);
	(void)aqm_chan_init(&aqm_llm_chan, aqm_llm_region,
	    aqm_llm_region_size, aqm_llm_state_ring, aqm_llm_verdict_ring);

	make_dev_args_init(&args);
	args.mda_devsw = &aqm_llm_cdevsw;
	args.mda_uid = UID_ROOT;
	args.mda_gid = GID_WHEEL;
	args.mda_mode = 0600;
	error = make_dev_s(&args, &aqm_llm_cdev, AQM_LLM_NAME);
	if (error == 0)
		error = dn_sched_modevent(mod, MOD_LOAD, &aqm_llm_desc);
	if (error != 0) {
		if (aqm_llm_cdev != NULL)
			destroy_dev(aqm_llm_cdev);
		kmem_free(aqm_llm_region, round_page(aqm_llm_region_size));
		mtx_destroy(&aqm_llm_mtx);
	}
	return (error);
}

static int
aqm_llm_unload(module_t mod)
{
	int error;

	/* Refuse while anything could still touch the module's memory. */
	if (aqm_llm_instances != 0 || aqm_llm_mapped != 0 ||
	    aqm_llm_pending_frees != 0)
		return (EBUSY);
	error = dn_sched_modevent(mod, MOD_UNLOAD, &aqm_llm_desc);
	if (error != 0)
		return (error);
	destroy_dev(aqm_llm_cdev);
	kmem_free(aqm_llm_region, round_page(aqm_llm_region_size));
	mtx_destroy(&aqm_llm_mtx);
	return (0);
}

/*
 * Our own module handler around dummynet's (what DECLARE_DNSCHED_MODULE
 * would install alone): the device and the region come and go with the
 * scheduler, and unload is refused while the region is mapped.
 */
static int
aqm_llm_modevent(module_t mod, int cmd, void *arg)
{

	(void)arg;
	switch (cmd) {
	case MOD_LOAD:
		return (aqm_llm_load(mod));
	case MOD_UNLOAD:
		return (aqm_llm_unload(mod));
	default:
		return (EOPNOTSUPP);
	}
}

static moduledata_t aqm_llm_mod = {
	AQM_LLM_NAME, aqm_llm_modevent, NULL
};
DECLARE_MODULE(aqm_llm, aqm_llm_mod, SI_SUB_PROTO_IFATTACHDOMAIN,
    SI_ORDER_ANY);
MODULE_DEPEND(aqm_llm, dummynet, 3, 3, 3);
MODULE_VERSION(aqm_llm, 1);
