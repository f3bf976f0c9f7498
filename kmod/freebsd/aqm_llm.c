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
 * packet carries its struct aqm_pkt in an mbuf tag placed after dummynet's.
 * /dev/aqm_llm maps the channel region (allocated once, at load) to aqmllmd.
 *
 * The single-queue contract: the scheduler is not DN_MULTIQUEUE, so dummynet
 * treats the start of the instance's private area as a struct dn_queue (it
 * reads its length to decide whether the instance is idle, its flowset and
 * AQM status when it destroys it, and hands it to a flowset AQM's init).  As
 * in dn_sched_fifo.c, that queue is really there, and its statistics and
 * the instance's are kept current: they are what `dnctl sched show` prints.
 *
 * Lifetime: dummynet creates an instance with the first packet and destroys
 * it when idle (net.inet.ip.dummynet.expire), on reconfiguration and on
 * deletion.  The state of an instance (core, queues, tick) is taken with
 * its first enqueued packet, so an instance dummynet frees without
 * free_sched (a flowset AQM whose init failed) holds nothing.  When an
 * instance goes, its scheduler keeps its state for the next instance: the
 * PI controller, the parameters, the counters and the region carry on
 * across idle periods; a state is freed when its scheduler goes.  The
 * region belongs to a scheduler number, not to an instance: it serves the
 * oldest state of that number, and moves to the next when that one is
 * freed.
 *
 * Locking: dummynet calls every scheduler method with its lock held.  The
 * module mutex protects the instance list, the scheduler list and the
 * attachment; each instance's mutex protects its core and queues and is
 * taken by its tick callout.  Order: dummynet lock, module mutex, instance
 * mutex.  Nothing here sleeps under a lock; allocations in dummynet context
 * are M_NOWAIT.
 */

#include "aqm_llm_os.h"

#include "aqm_core.h"
#include "aqm_llm_ioctl.h"

#define	AQM_LLM_NAME		"aqm_llm"
#define	AQM_LLM_TYPE		0x41514d4c	/* unique dummynet type id */
#define	AQM_LLM_SCHED_MAX	65535		/* DN_MAX_ID - 1 */
#define	MTAG_AQM_LLM		1745913001	/* mbuf tag cookie */
#define	AQM_LLM_TICK_SBT	(10 * SBT_1MS)

static MALLOC_DEFINE(M_AQMLLM, "aqm_llm", "AQM-LLM scheduler");

#ifndef AQM_LLM_HARNESS
/* aqm_bridge.channel hard-codes these numbers. */
_Static_assert(AQMLLM_ATTACH == 0x80045102ul, "AQMLLM_ATTACH number");
_Static_assert(AQMLLM_INFO == 0x40405101ul, "AQMLLM_INFO number");
#endif

/* The state of one instance, allocated with its first packet. */
struct aqm_llm_state {
	struct mtx		 mtx;
	struct callout		 tick;
	struct aqm_core		*core;
	struct mq		 q[AQM_NQUEUES];
	uint64_t		 id;		/* module-wide, from 1 */
	int			 sched_nr;
	int			 dying;
	int			 parked;	/* kept by its scheduler */
	TAILQ_ENTRY(aqm_llm_state) link;	/* oldest first */
};

/* The instance as dummynet allocates it: si_datalen covers q and st. */
struct aqm_llm_si {
	struct dn_sch_inst	 si;
	struct dn_queue		 q;	/* (si + 1): the single-queue contract */
	struct aqm_llm_state	*st;
};
_Static_assert(__offsetof(struct aqm_llm_si, q) ==
    sizeof(struct dn_sch_inst), "dummynet reads a dn_queue at (si + 1)");

/* A configured scheduler's private area (schk_datalen). */
struct aqm_llm_schk {
	LIST_ENTRY(aqm_llm_schk) link;
	int			 linked;
	int			 sched_nr;
	struct aqm_params	 params;	/* a new state's */
	struct aqm_llm_state	*parked;	/* for the next instance */
};

#define	AQM_LLM_SI(si)		((struct aqm_llm_si *)(si))
#define	AQM_LLM_SCHK(s)		((struct aqm_llm_schk *)((s) + 1))

static struct mtx aqm_llm_mtx;
static TAILQ_HEAD(, aqm_llm_state) aqm_llm_list =
    TAILQ_HEAD_INITIALIZER(aqm_llm_list);
static LIST_HEAD(, aqm_llm_schk) aqm_llm_scheds =
    LIST_HEAD_INITIALIZER(aqm_llm_scheds);
static int aqm_llm_instances;
static uint64_t aqm_llm_next_id;
static int aqm_llm_attached_sched = -1;	/* the region's scheduler */
static struct aqm_llm_state *aqm_llm_served;	/* its oldest state */
static uint64_t aqm_llm_attach_ns;
static uint32_t aqm_llm_attach_count;
static volatile u_int aqm_llm_mapped;
static volatile u_int aqm_llm_pending_frees;
static void *aqm_llm_region;
static uint64_t aqm_llm_region_size;
static struct aqm_chan aqm_llm_chan;
static struct cdev *aqm_llm_cdev;
static struct aqm_params aqm_llm_defaults;
static struct sysctl_ctx_list aqm_llm_sysctl_ctx;
static struct dn_alg aqm_llm_desc;

static int aqm_llm_state_ring = 65536;
static int aqm_llm_verdict_ring = 65536;

static uint64_t
aqm_llm_now(void)
{

	return ((uint64_t)sbttons(sbinuptime()));
}

static void
aqm_llm_set_oid(struct dn_id *o, int type, int len)
{

	o->type = (uint8_t)type;
	o->len = (uint16_t)len;
	o->subtype = 0;
}

/* -- packet metadata ------------------------------------------------------- */

/*
 * ECN codepoint of a packet whose IP header starts where dummynet's tag
 * says (after the Ethernet header on the layer-2 path).  A header not in
 * the first mbuf reads as Not-ECT and goes to the classic queue.
 */
static uint8_t
aqm_llm_ecn(struct mbuf *m)
{
	int off = dn_tag_get(m)->iphdr_off;
	struct ip *ip;
	struct ip6_hdr *ip6;

	if (m->m_len < off + (int)sizeof(struct ip))
		return (AQM_ECN_NOT_ECT);
	ip = (struct ip *)(mtod(m, char *) + off);
	if (ip->ip_v == IPVERSION)
		return (ip->ip_tos & IPTOS_ECN_MASK);
	if (ip->ip_v == (IPV6_VERSION >> 4) &&
	    m->m_len >= off + (int)sizeof(struct ip6_hdr)) {
		ip6 = (struct ip6_hdr *)ip;
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

/* Our tag goes after dummynet's, which dn_tag_get() expects first. */
static void
aqm_llm_tag_attach(struct mbuf *m, struct m_tag *t)
{
	struct m_tag *first = m_tag_first(m);

	if (first != NULL)
		SLIST_INSERT_AFTER(first, t, m_tag_link);
	else
		m_tag_prepend(m, t);
}

/*
 * A waiting packet keeps its receiving interface as index and generation,
 * not as a pointer (the interface may detach meanwhile), as dummynet's own
 * queues do; outbound packets with a send tag have no rcvif.
 */
static int
aqm_llm_has_rcvif(struct mbuf *m)
{

	return ((m->m_pkthdr.csum_flags & CSUM_SND_TAG) == 0 &&
	    m->m_pkthdr.rcvif != NULL);
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

/* Dummynet's statistics: the instance's queue and the instance. */
static void
aqm_llm_stats(struct aqm_llm_si *asi, int pkts, int bytes)
{

	asi->q.ni.length += pkts;
	asi->q.ni.len_bytes += bytes;
	asi->si.ni.length += pkts;
	asi->si.ni.len_bytes += bytes;
}

static void
aqm_llm_drop_stats(struct aqm_llm_si *asi)
{

	asi->q.ni.drops++;
	asi->si.ni.drops++;
}

/* -- the attachment ------------------------------------------------------------ */

/* The oldest state of a scheduler number (module mutex held). */
static struct aqm_llm_state *
aqm_llm_find(int sched_nr)
{
	struct aqm_llm_state *st;

	TAILQ_FOREACH(st, &aqm_llm_list, link)
		if (st->sched_nr == sched_nr)
			return (st);
	return (NULL);
}

/* How many aqm_llm schedulers have this number (instances need one). */
static int
aqm_llm_configured(int sched_nr)
{
	struct aqm_llm_schk *as;
	int n = 0;

	LIST_FOREACH(as, &aqm_llm_scheds, link)
		if (as->sched_nr == sched_nr)
			n++;
	return (n);
}

/*
 * Make the region serve the oldest state of the attached scheduler
 * (module mutex held): called whenever a state or the attachment comes or
 * goes.  A core attaching to the region bumps its producer generation
 * and carries on the sequence numbers already published there.
 */
static void
aqm_llm_follow(void)
{
	struct aqm_llm_state *want;
	int rc;

	want = aqm_llm_attached_sched >= 0 ?
	    aqm_llm_find(aqm_llm_attached_sched) : NULL;
	if (want == aqm_llm_served)
		return;
	if (aqm_llm_served != NULL) {
		mtx_lock(&aqm_llm_served->mtx);
		aqm_detach(aqm_llm_served->core);
		mtx_unlock(&aqm_llm_served->mtx);
		aqm_llm_served = NULL;
	}
	if (want == NULL)
		return;
	mtx_lock(&want->mtx);
	rc = aqm_attach(want->core, aqm_llm_region, aqm_llm_region_size,
	    aqm_llm_now());
	mtx_unlock(&want->mtx);
	if (rc != AQM_OK) {		/* the region is ours: cannot happen */
		printf("aqm_llm: region refused by instance %ju: %d\n",
		    (uintmax_t)want->id, rc);
		return;
	}
	aqm_llm_served = want;
	aqm_llm_attach_ns = aqm_llm_now();
	aqm_llm_attach_count++;
}

/* -- scheduler callbacks ----------------------------------------------------- */

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

/* The state of an instance, made with its first packet (dummynet locked). */
static struct aqm_llm_state *
aqm_llm_state_new(struct dn_sch_inst *si)
{
	struct aqm_llm_schk *as = AQM_LLM_SCHK(si->sched);
	struct aqm_llm_state *st;
	struct aqm_params p;
	uint64_t now = aqm_llm_now();

	st = malloc(sizeof(*st), M_AQMLLM, M_NOWAIT | M_ZERO);
	if (st == NULL)
		return (NULL);
	st->core = malloc(aqm_core_size(), M_AQMLLM, M_NOWAIT | M_ZERO);
	if (st->core == NULL) {
		free(st, M_AQMLLM);
		return (NULL);
	}
	/* Ready to be locked before anyone can find it. */
	mtx_init(&st->mtx, "aqm_llm inst", NULL, MTX_DEF);
	callout_init_mtx(&st->tick, &st->mtx, 0);
	st->sched_nr = (int)si->sched->sch.sched_nr;
	mtx_lock(&aqm_llm_mtx);
	p = as->linked ? as->params : aqm_llm_defaults;
	mtx_unlock(&aqm_llm_mtx);
	(void)aqm_core_init(st->core, &p, (uint64_t)(uintptr_t)st ^ now, now);
	mtx_lock(&st->mtx);
	callout_reset_sbt(&st->tick, AQM_LLM_TICK_SBT, 0, aqm_llm_tick, st, 0);
	mtx_unlock(&st->mtx);
	mtx_lock(&aqm_llm_mtx);
	st->id = ++aqm_llm_next_id;
	TAILQ_INSERT_TAIL(&aqm_llm_list, st, link);
	aqm_llm_instances++;
	aqm_llm_follow();
	mtx_unlock(&aqm_llm_mtx);
	return (st);
}

/* An instance's first packet: the state its scheduler kept, or a new one. */
static struct aqm_llm_state *
aqm_llm_state_get(struct dn_sch_inst *si)
{
	struct aqm_llm_schk *as = AQM_LLM_SCHK(si->sched);
	struct aqm_llm_state *st;

	mtx_lock(&aqm_llm_mtx);
	st = as->parked;
	if (st != NULL) {
		as->parked = NULL;
		st->parked = 0;
		aqm_llm_instances++;
	}
	mtx_unlock(&aqm_llm_mtx);
	return (st != NULL ? st : aqm_llm_state_new(si));
}

/*
 * Take a state off the list and free it (module mutex held; its queues
 * empty): the region moves on if it served it.  The callout may be running:
 * the state is freed once it has drained, never waiting here.
 */
static void
aqm_llm_state_release(struct aqm_llm_state *st)
{
	int later;

	TAILQ_REMOVE(&aqm_llm_list, st, link);
	atomic_add_int(&aqm_llm_pending_frees, 1);
	mtx_lock(&st->mtx);
	st->dying = 1;
	mtx_unlock(&st->mtx);
	aqm_llm_follow();
	mtx_lock(&st->mtx);
	later = callout_async_drain(&st->tick, aqm_llm_drained) == 0;
	mtx_unlock(&st->mtx);
	if (!later)
		aqm_llm_free_state(st);
}

static int
aqm_llm_enqueue(struct dn_sch_inst *si, struct dn_queue *q, struct mbuf *m)
{
	struct aqm_llm_si *asi = AQM_LLM_SI(si);
	struct aqm_llm_state *st = asi->st;
	struct aqm_pkt pkt;
	struct m_tag *t;
	int len = m->m_pkthdr.len;

	(void)q;		/* NULL: not DN_MULTIQUEUE */
	asi->q.ni.tot_pkts++;
	asi->q.ni.tot_bytes += len;
	si->ni.tot_pkts++;
	si->ni.tot_bytes += len;
	if (st == NULL && (st = asi->st = aqm_llm_state_get(si)) == NULL)
		goto drop;
	mtx_lock(&st->mtx);
	if (aqm_enqueue(st->core, aqm_llm_now(), (uint32_t)len,
	    aqm_llm_ecn(m), &pkt) == AQM_V_DROP) {
		mtx_unlock(&st->mtx);
		goto drop;
	}
	t = m_tag_alloc(MTAG_AQM_LLM, 0, sizeof(pkt), M_NOWAIT);
	if (t == NULL) {
		/* No tag, no way to find its metadata at dequeue. */
		aqm_forget(st->core, &pkt, aqm_llm_head_ts(st, pkt.queue));
		mtx_unlock(&st->mtx);
		goto drop;
	}
	memcpy(t + 1, &pkt, sizeof(pkt));
	aqm_llm_tag_attach(m, t);
	if (aqm_llm_has_rcvif(m))
		m_rcvif_serialize(m);
	aqm_llm_append(&st->q[pkt.queue], m);
	mtx_unlock(&st->mtx);
	aqm_llm_stats(asi, 1, len);
	return (0);
drop:
	aqm_llm_drop_stats(asi);
	m_freem(m);
	return (1);
}

static struct mbuf *
aqm_llm_dequeue(struct dn_sch_inst *si)
{
	struct aqm_llm_si *asi = AQM_LLM_SI(si);
	struct aqm_llm_state *st = asi->st;
	struct aqm_decision d;
	struct aqm_pkt pkt, *p;
	struct m_tag *t;
	struct mbuf *m;
	uint64_t now;
	int qi;

	if (st == NULL)
		return (NULL);
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
		aqm_llm_stats(asi, -1, -m->m_pkthdr.len);
		p = aqm_llm_meta(m, &t);
		if (p == NULL) {	/* cannot happen: tagged at enqueue */
			aqm_llm_drop_stats(asi);
			m_freem(m);
			continue;
		}
		pkt = *p;
		m_tag_delete(m, t);
		if (aqm_llm_has_rcvif(m) && m_rcvif_restore(m) == NULL) {
			/* Its receiving interface left while it waited. */
			aqm_forget(st->core, &pkt, aqm_llm_head_ts(st, qi));
			aqm_llm_drop_stats(asi);
			m_freem(m);
			continue;
		}
		aqm_dequeue(st->core, now, &pkt, aqm_llm_head_ts(st, qi), &d);
		if (d.verdict == AQM_V_DROP) {
			aqm_llm_drop_stats(asi);
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

static int
aqm_llm_new_sched(struct dn_sch_inst *si)
{
	struct aqm_llm_si *asi = AQM_LLM_SI(si);

	/* As dn_sched_fifo.c sets up the queue dummynet finds at (si + 1). */
	aqm_llm_set_oid(&asi->q.ni.oid, DN_QUEUE, sizeof(asi->q));
	asi->q._si = si;
	asi->q.fs = si->sched->fs;
	asi->st = NULL;			/* made with the first packet */
	return (0);
}

static int
aqm_llm_free_sched(struct dn_sch_inst *si)
{
	struct aqm_llm_si *asi = AQM_LLM_SI(si);
	struct aqm_llm_schk *as = AQM_LLM_SCHK(si->sched);
	struct aqm_llm_state *st = asi->st, *old;
	struct aqm_pkt *p;
	struct mbuf *m;
	u_int q;

	if (st != NULL) {
		mtx_lock(&aqm_llm_mtx);
		aqm_llm_instances--;
		/* Packets still queued (reconfiguration, deletion) go. */
		mtx_lock(&st->mtx);
		for (q = 0; q < AQM_NQUEUES; q++) {
			while ((m = aqm_llm_pop(&st->q[q])) != NULL) {
				if ((p = aqm_llm_meta(m, NULL)) != NULL)
					aqm_forget(st->core, p,
					    aqm_llm_head_ts(st, q));
				m_freem(m);
			}
		}
		mtx_unlock(&st->mtx);
		/* The scheduler keeps the oldest state for its next instance. */
		old = as->parked;
		if (old == NULL || st->id < old->id) {
			as->parked = st;
			st->parked = 1;
			st = old;
		}
		if (st != NULL)
			aqm_llm_state_release(st);
		mtx_unlock(&aqm_llm_mtx);
	}
	memset(&asi->q, 0, sizeof(asi->q));
	asi->st = NULL;
	return (0);
}

/* A scheduler of this type was configured (dummynet locked). */
static int
aqm_llm_config(struct dn_schk *s)
{
	struct aqm_llm_schk *as = AQM_LLM_SCHK(s);

	mtx_lock(&aqm_llm_mtx);
	if (!as->linked) {
		as->linked = 1;
		as->sched_nr = (int)s->sch.sched_nr;
		as->params = aqm_llm_defaults;
		LIST_INSERT_HEAD(&aqm_llm_scheds, as, link);
		/* dn_sched_modevent() refuses unload while this is nonzero. */
		aqm_llm_desc.ref_count++;
	}
	mtx_unlock(&aqm_llm_mtx);
	return (0);
}

/* The scheduler goes (deleted or reconfigured); its instances went first. */
static int
aqm_llm_destroy(struct dn_schk *s)
{
	struct aqm_llm_schk *as = AQM_LLM_SCHK(s);

	mtx_lock(&aqm_llm_mtx);
	if (as->parked != NULL) {
		aqm_llm_state_release(as->parked);
		as->parked = NULL;
	}
	if (as->linked) {
		LIST_REMOVE(as, link);
		as->linked = 0;
		aqm_llm_desc.ref_count--;
	}
	mtx_unlock(&aqm_llm_mtx);
	return (0);
}

static struct dn_alg aqm_llm_desc = {
	.type = AQM_LLM_TYPE,
	.name = AQM_LLM_NAME,
	.flags = 0,			/* one queue: the contract above */
	.schk_datalen = sizeof(struct aqm_llm_schk),
	.si_datalen = sizeof(struct aqm_llm_si) - sizeof(struct dn_sch_inst),
	.q_datalen = 0,
	.enqueue = aqm_llm_enqueue,
	.dequeue = aqm_llm_dequeue,
	.config = aqm_llm_config,
	.destroy = aqm_llm_destroy,
	.new_sched = aqm_llm_new_sched,
	.free_sched = aqm_llm_free_sched,
};

/* -- /dev/aqm_llm ------------------------------------------------------------- */

static void
aqm_llm_info_get(struct aqm_llm_info *info)
{
	struct aqm_llm_state *st;

	memset(info, 0, sizeof(*info));
	info->abi_version = AQM_CHAN_ABI_VERSION;
	info->state_ring_entries = (uint32_t)aqm_llm_state_ring;
	info->verdict_ring_entries = (uint32_t)aqm_llm_verdict_ring;
	info->instances = (uint32_t)aqm_llm_instances;
	info->region_size = aqm_llm_region_size;
	info->attached_sched = aqm_llm_attached_sched;
	TAILQ_FOREACH(st, &aqm_llm_list, link)
		if (st->sched_nr == aqm_llm_attached_sched && !st->parked)
			info->sched_instances++;
	info->sched_configured =
	    (uint32_t)aqm_llm_configured(aqm_llm_attached_sched);
	info->served_instance = aqm_llm_served != NULL ?
	    aqm_llm_served->id : 0;
	info->attach_ns = aqm_llm_attach_ns;
	info->attach_count = aqm_llm_attach_count;
}

static int
aqm_llm_setparams(int sched_nr, struct aqm_params *p)
{
	struct aqm_llm_state *st;
	struct aqm_llm_schk *as;

	if (aqm_params_validate(p) != AQM_OK)
		return (EINVAL);		/* nothing changed */
	TAILQ_FOREACH(st, &aqm_llm_list, link) {
		if (st->sched_nr != sched_nr)
			continue;
		mtx_lock(&st->mtx);
		(void)aqm_core_set_params(st->core, p);
		mtx_unlock(&st->mtx);
	}
	LIST_FOREACH(as, &aqm_llm_scheds, link)
		if (as->sched_nr == sched_nr)
			as->params = *p;
	return (0);
}

static int
aqm_llm_ioctl(struct cdev *dev, u_long cmd, caddr_t data, int flag,
    struct thread *td)
{
	struct aqm_llm_counters_req *cr;
	struct aqm_llm_params_req *pr;
	struct aqm_llm_state *st;
	struct aqm_llm_schk *as;
	int32_t nr;
	int error = 0;

	(void)dev;
	(void)flag;
	(void)td;
	mtx_lock(&aqm_llm_mtx);
	switch (cmd) {
	case AQMLLM_INFO:
		aqm_llm_info_get((struct aqm_llm_info *)data);
		break;
	case AQMLLM_ATTACH:
		nr = *(int32_t *)data;
		if (nr < 1 || nr > AQM_LLM_SCHED_MAX) {
			error = EINVAL;
			break;
		}
		if (!aqm_llm_configured(nr)) {
			error = ENOENT;		/* no aqm_llm scheduler nr */
			break;
		}
		if (nr != aqm_llm_attached_sched) {
			aqm_llm_attached_sched = nr;
			aqm_llm_follow();
		}
		break;
	case AQMLLM_DETACH:
		aqm_llm_attached_sched = -1;
		aqm_llm_follow();
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
		if (!aqm_llm_configured(pr->sched)) {
			error = ENOENT;
			break;
		}
		if (cmd == AQMLLM_SETPARAMS)
			error = aqm_llm_setparams(pr->sched, &pr->params);
		if ((st = aqm_llm_find(pr->sched)) != NULL) {
			mtx_lock(&st->mtx);
			aqm_core_get_params(st->core, &pr->params);
			mtx_unlock(&st->mtx);
		} else {
			LIST_FOREACH(as, &aqm_llm_scheds, link)
				if (as->sched_nr == pr->sched)
					pr->params = as->params;
		}
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

/*
 * Registered when the module loads, after the mutex their handlers take,
 * and removed before it goes (sysctl_ctx_free waits for running handlers).
 */
SYSCTL_DECL(_net_inet_ip_dummynet);

/* A default for new schedulers: refused (EINVAL) if the set is invalid. */
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

/* A counter summed over all instances. */
static int
aqm_llm_sysctl_counter(SYSCTL_HANDLER_ARGS)
{
	struct aqm_llm_state *st;
	struct aqm_counters c;
	uint64_t sum = 0;

	(void)arg1;
	mtx_lock(&aqm_llm_mtx);
	TAILQ_FOREACH(st, &aqm_llm_list, link) {
		mtx_lock(&st->mtx);
		aqm_counters_get(st->core, &c);
		mtx_unlock(&st->mtx);
		sum += *(uint64_t *)((char *)&c + arg2);
	}
	mtx_unlock(&aqm_llm_mtx);
	return (sysctl_handle_64(oidp, &sum, 0, req));
}

/* A field of struct aqm_llm_info, as AQMLLM_INFO returns it. */
static int
aqm_llm_sysctl_info(SYSCTL_HANDLER_ARGS)
{
	struct aqm_llm_info info;
	int64_t value;

	(void)arg1;
	mtx_lock(&aqm_llm_mtx);
	aqm_llm_info_get(&info);
	mtx_unlock(&aqm_llm_mtx);
	switch (arg2) {
	case __offsetof(struct aqm_llm_info, instances):
		value = info.instances;
		break;
	case __offsetof(struct aqm_llm_info, attached_sched):
		value = info.attached_sched;
		break;
	case __offsetof(struct aqm_llm_info, sched_instances):
		value = info.sched_instances;
		break;
	case __offsetof(struct aqm_llm_info, served_instance):
		value = (int64_t)info.served_instance;
		break;
	case __offsetof(struct aqm_llm_info, attach_ns):
		value = (int64_t)info.attach_ns;
		break;
	default:
		value = info.attach_count;
		break;
	}
	return (sysctl_handle_64(oidp, &value, 0, req));
}

struct aqm_llm_oid {
	const char	*name;
	intmax_t	 off;
	const char	*descr;
};

#define	AQM_LLM_PARAM(f, d)	{ #f, __offsetof(struct aqm_params, f), d }
static const struct aqm_llm_oid aqm_llm_param_oids[] = {
	AQM_LLM_PARAM(limit_pkts, "queue limit, packets (both queues)"),
	AQM_LLM_PARAM(limit_bytes, "queue limit, bytes (both queues)"),
	AQM_LLM_PARAM(target_ns, "PI target delay, ns"),
	AQM_LLM_PARAM(tupdate_ns, "PI update interval, ns"),
	AQM_LLM_PARAM(alpha_mhz, "PI integral gain, mHz"),
	AQM_LLM_PARAM(beta_mhz, "PI proportional gain, mHz"),
	AQM_LLM_PARAM(step_thresh_ns, "L4S step marking threshold, ns"),
	AQM_LLM_PARAM(step_thresh_pkts,
	    "L4S step threshold in L packets (0: use step_thresh_ns)"),
	AQM_LLM_PARAM(min_qlen_step, "no step mark below this L queue length"),
	AQM_LLM_PARAM(coupling_factor, "coupling factor k"),
	AQM_LLM_PARAM(c_protection_pct, "classic WRR weight, percent"),
	AQM_LLM_PARAM(mtu_bytes, "MTU for the 2-MTU floor and WRR credit"),
	AQM_LLM_PARAM(drop_overload, "drop classic packets in overload"),
	AQM_LLM_PARAM(verdict_guard,
	    "DualPI2 over a verdict: 0 none, 1 step, 2 all"),
	AQM_LLM_PARAM(harm_budget_pct,
	    "model signals beyond DualPI2's own, percent of DualPI2's"),
};

#define	AQM_LLM_COUNTER(f, d)	{ #f, __offsetof(struct aqm_counters, f), d }
static const struct aqm_llm_oid aqm_llm_counter_oids[] = {
	AQM_LLM_COUNTER(decisions_model, "dequeues decided by a model verdict"),
	AQM_LLM_COUNTER(decisions_fallback, "dequeues decided by DualPI2"),
	AQM_LLM_COUNTER(verdicts_applied, "verdicts applied"),
	AQM_LLM_COUNTER(verdicts_late, "verdicts that came after their packet"),
	AQM_LLM_COUNTER(verdicts_bad, "verdicts with unknown seq or action"),
	AQM_LLM_COUNTER(states_published, "state records published"),
	AQM_LLM_COUNTER(states_lost, "state records lost to a full ring"),
	AQM_LLM_COUNTER(states_slot_busy,
	    "state records not published: verdict slot still in use"),
	AQM_LLM_COUNTER(step_marks, "L4S step marks"),
	AQM_LLM_COUNTER(channel_errors, "corrupted channel seen"),
};

#define	AQM_LLM_INFO(f, d)	{ #f, __offsetof(struct aqm_llm_info, f), d }
static const struct aqm_llm_oid aqm_llm_info_oids[] = {
	AQM_LLM_INFO(instances, "live scheduler instances (all schedulers)"),
	AQM_LLM_INFO(attached_sched,
	    "scheduler number the region belongs to (-1: none)"),
	AQM_LLM_INFO(sched_instances, "live instances of attached_sched"),
	AQM_LLM_INFO(served_instance,
	    "id of the state the region serves (0: none)"),
	AQM_LLM_INFO(attach_ns, "uptime (ns) of the last core attach"),
	AQM_LLM_INFO(attach_count, "core attaches to the region since load"),
};

#define	AQM_LLM_NELEM(a)	(sizeof(a) / sizeof((a)[0]))

static void
aqm_llm_sysctl_attach(void)
{
	struct sysctl_oid_list *top;
	struct sysctl_oid *node;
	u_int i;

	sysctl_ctx_init(&aqm_llm_sysctl_ctx);
	node = SYSCTL_ADD_NODE(&aqm_llm_sysctl_ctx,
	    SYSCTL_STATIC_CHILDREN(_net_inet_ip_dummynet), OID_AUTO,
	    AQM_LLM_NAME, CTLFLAG_RW | CTLFLAG_MPSAFE, 0, "AQM-LLM scheduler");
	if (node == NULL)
		return;
	top = SYSCTL_CHILDREN(node);
	/* One oid per table entry, all with the table's access and handler. */
#define	AQM_LLM_ADD_OIDS(tab, access, handler, fmt)			\
	for (i = 0; i < AQM_LLM_NELEM(tab); i++)			\
		SYSCTL_ADD_PROC(&aqm_llm_sysctl_ctx, top, OID_AUTO,	\
		    (tab)[i].name, (access) | CTLFLAG_MPSAFE, NULL,	\
		    (tab)[i].off, (handler), (fmt), (tab)[i].descr)
	AQM_LLM_ADD_OIDS(aqm_llm_param_oids, CTLTYPE_UINT | CTLFLAG_RW,
	    aqm_llm_sysctl_default, "IU");
	AQM_LLM_ADD_OIDS(aqm_llm_counter_oids, CTLTYPE_U64 | CTLFLAG_RD,
	    aqm_llm_sysctl_counter, "QU");
	AQM_LLM_ADD_OIDS(aqm_llm_info_oids, CTLTYPE_S64 | CTLFLAG_RD,
	    aqm_llm_sysctl_info, "Q");
#undef AQM_LLM_ADD_OIDS
	SYSCTL_ADD_INT(&aqm_llm_sysctl_ctx, top, OID_AUTO, "state_ring",
	    CTLFLAG_RD, &aqm_llm_state_ring, 0,
	    "state ring entries (loader tunable)");
	SYSCTL_ADD_INT(&aqm_llm_sysctl_ctx, top, OID_AUTO, "verdict_ring",
	    CTLFLAG_RD, &aqm_llm_verdict_ring, 0,
	    "verdict ring entries (loader tunable)");
}

/* -- module ------------------------------------------------------------------ */

static int
aqm_llm_make_dev(void)
{
	struct make_dev_args args;

	make_dev_args_init(&args);
	args.mda_devsw = &aqm_llm_cdevsw;
	args.mda_uid = UID_ROOT;
	args.mda_gid = GID_WHEEL;
	args.mda_mode = 0600;
	return (make_dev_s(&args, &aqm_llm_cdev, AQM_LLM_NAME));
}

static int
aqm_llm_load(module_t mod)
{
	int error;

	TUNABLE_INT_FETCH("net.inet.ip.dummynet.aqm_llm.state_ring",
	    &aqm_llm_state_ring);
	TUNABLE_INT_FETCH("net.inet.ip.dummynet.aqm_llm.verdict_ring",
	    &aqm_llm_verdict_ring);
	if (aqm_llm_state_ring < 0 || aqm_llm_verdict_ring < 0 ||
	    !aqm_ring_entries_valid((uint32_t)aqm_llm_state_ring) ||
	    !aqm_ring_entries_valid((uint32_t)aqm_llm_verdict_ring)) {
		printf("aqm_llm: ring sizes must be powers of two in [%u, %u]\n",
		    AQM_RING_MIN_ENTRIES, AQM_RING_MAX_ENTRIES);
		return (EINVAL);
	}
	aqm_params_default(&aqm_llm_defaults);
	mtx_init(&aqm_llm_mtx, "aqm_llm", NULL, MTX_DEF);
	aqm_llm_region_size = aqm_chan_region_size(
	    (uint32_t)aqm_llm_state_ring, (uint32_t)aqm_llm_verdict_ring);
	aqm_llm_region = (void *)kmem_malloc(round_page(aqm_llm_region_size),
	    M_WAITOK | M_ZERO);
	(void)aqm_chan_init(&aqm_llm_chan, aqm_llm_region,
	    aqm_llm_region_size, (uint32_t)aqm_llm_state_ring,
	    (uint32_t)aqm_llm_verdict_ring);

	error = aqm_llm_make_dev();
	if (error == 0 && dn_sched_modevent(mod, MOD_LOAD, &aqm_llm_desc) != 0)
		error = EEXIST;		/* dummynet has a scheduler so named */
	if (error != 0) {
		if (aqm_llm_cdev != NULL)
			destroy_dev(aqm_llm_cdev);
		aqm_llm_cdev = NULL;
		kmem_free(aqm_llm_region, round_page(aqm_llm_region_size));
		mtx_destroy(&aqm_llm_mtx);
		return (error);
	}
	aqm_llm_sysctl_attach();
	return (0);
}

static int
aqm_llm_unload(module_t mod)
{
	int busy, error;

	mtx_lock(&aqm_llm_mtx);
	busy = aqm_llm_instances != 0 || aqm_llm_desc.ref_count != 0 ||
	    aqm_llm_pending_frees != 0;
	mtx_unlock(&aqm_llm_mtx);
	if (busy)
		return (EBUSY);
	/*
	 * No new mapping can start once the device is gone: only then does
	 * the count of mappings tell whether the region is still in use.
	 */
	destroy_dev(aqm_llm_cdev);
	aqm_llm_cdev = NULL;
	error = aqm_llm_mapped != 0 ? EBUSY :
	    dn_sched_modevent(mod, MOD_UNLOAD, &aqm_llm_desc);
	if (error != 0) {
		if (aqm_llm_make_dev() != 0)
			printf("aqm_llm: unload refused, /dev/aqm_llm lost\n");
		return (error);
	}
	(void)sysctl_ctx_free(&aqm_llm_sysctl_ctx);
	kmem_free(aqm_llm_region, round_page(aqm_llm_region_size));
	mtx_destroy(&aqm_llm_mtx);
	return (0);
}

/*
 * Our own module handler around dummynet's (what DECLARE_DNSCHED_MODULE
 * would install alone): the device, the region and the sysctls come and
 * go with the scheduler, and unload is refused while the region is mapped.
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
/*
 * The subsystem and order of FreeBSD 14's DECLARE_DNSCHED_MODULE: after
 * dummynet's own module event (SI_SUB_PROTO_FIREWALL, SI_ORDER_ANY - 128)
 * when both are loaded at boot.
 */
DECLARE_MODULE(aqm_llm, aqm_llm_mod, SI_SUB_PROTO_FIREWALL, SI_ORDER_ANY);
MODULE_DEPEND(aqm_llm, dummynet, 3, 3, 3);
MODULE_VERSION(aqm_llm, 2);
