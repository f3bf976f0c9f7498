/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_channel.h: the AQM-LLM channel ABI.
 *
 * One region of shared memory carries per-packet state records from the
 * data path (kernel module, Linux host, ns-3 host) to the inference daemon
 * and verdicts back.  This header is the whole contract: the kernel module,
 * the Linux hosts, the ns-3 queue disc and the daemon's helper library all
 * include it, and the Python side checks its numpy dtypes against the sizes
 * and offsets that aqm_abi_describe() reports.
 *
 * Region layout (offsets in bytes, every block 64-byte aligned):
 *
 *   0                      struct aqm_chan_hdr          (geometry, magic)
 *   AQM_CHAN_IDX_OFF       4 x struct aqm_ring_index    (one cache line each)
 *   AQM_CHAN_CTRL_OFF      struct aqm_chan_ctrl         (parameter mailbox,
 *                                                        published counters)
 *   state_ring_off         state_ring_entries x struct aqm_state_rec
 *   verdict_ring_off       verdict_ring_entries x struct aqm_verdict_rec
 *
 * Each ring is single producer, single consumer.  Indices are free-running
 * 32-bit counters; the slot of index i is i & (entries - 1).  A producer
 * writes the record, then publishes prod with release ordering; a consumer
 * reads prod with acquire ordering, copies records out, then publishes cons
 * with release ordering.  A producer that finds the ring full drops the
 * record and counts it: it never waits.
 *
 * Nothing a peer writes is trusted: each side keeps its own copy of the
 * geometry it validated at attach time, reads every index exactly once,
 * masks every slot number, and treats (prod - cons) > entries as a corrupted
 * ring.  The data path only ever reads the verdict ring and the consumer
 * index of the state ring, so a hostile daemon can waste its own verdicts
 * but cannot make the data path read outside the region.
 *
 * Only fixed-width types; no OS headers.  Usable from C99 and C++.
 */

#ifndef AQM_CHANNEL_H
#define AQM_CHANNEL_H

#if defined(_KERNEL) && defined(__FreeBSD__)
#include <sys/stdint.h>		/* the kernel has no <stdint.h> */
#else
#include <stdint.h>
#endif

#define AQM_CHAN_MAGIC		0x4c4d5141u	/* "AQML" little endian */
#define AQM_CHAN_ABI_VERSION	2u
#define AQM_CACHELINE		64u

/* Ring sizes: powers of two between these bounds. */
#define AQM_RING_MIN_ENTRIES	64u
#define AQM_RING_MAX_ENTRIES	(1u << 22)

/* Queues of the dual queue. */
#define AQM_QUEUE_C		0u	/* classic */
#define AQM_QUEUE_L		1u	/* low latency (L4S) */
#define AQM_NQUEUES		2u

/* ECN codepoints as they appear in the IP header's two low TOS bits. */
#define AQM_ECN_NOT_ECT		0u
#define AQM_ECN_ECT1		1u
#define AQM_ECN_ECT0		2u
#define AQM_ECN_CE		3u

/* Actions a verdict may carry; the model's output order is the same. */
#define AQM_ACT_ENQUEUE		0u	/* forward unchanged */
#define AQM_ACT_DROP		1u
#define AQM_ACT_MARK		2u	/* set CE; a drop for Not-ECT */
#define AQM_NACTIONS		3u

/*
 * aqm_params.verdict_guard, one of: what DualPI2 still decides when a
 * model's verdict is in hand.  A verdict is fixed from the state at enqueue;
 * these look at the packet's own sojourn at dequeue, which no verdict can
 * know.  DualPI2's whole decision includes its step.
 */
#define AQM_GUARD_NONE		0u	/* the verdict alone */
#define AQM_GUARD_STEP		1u	/* L packets past the step: marked */
#define AQM_GUARD_DUALPI2	2u	/* the stronger of verdict and DualPI2 */

/* Probabilities are unsigned 32-bit fractions: AQM_PROB_ONE is 1.0. */
#define AQM_PROB_ONE		0xffffffffu

/* aqm_chan_hdr.flags */
#define AQM_CHAN_F_PAUSED	0x1u	/* daemon asks for fallback only */
#define AQM_CHAN_F_PRODUCER_UP	0x2u	/* a data path is attached */
#define AQM_CHAN_F_CONSUMER_UP	0x4u	/* a daemon is reading states */

/* struct aqm_state_rec.flags */
#define AQM_STATE_F_FIRST	0x1u	/* queue was empty at enqueue */

/* A compile-time size check that C99 accepts (no _Static_assert there). */
#ifdef __cplusplus
#define AQM_STATIC_ASSERT(cond, msg)	static_assert(cond, msg)
#else
#define AQM_SA_CAT2(a, b)		a##b
#define AQM_SA_CAT(a, b)		AQM_SA_CAT2(a, b)
#define AQM_STATIC_ASSERT(cond, msg)					\
	typedef char AQM_SA_CAT(aqm_static_assert_, __LINE__)[(cond) ? 1 : -1]
#endif

/*
 * The DualPI2 parameters.  Integer units so that the kernel never needs
 * floating point; aqm_params_validate() in the core gives the ranges.
 */
struct aqm_params {
	uint32_t limit_pkts;		/* both queues together; default 10000 */
	uint32_t limit_bytes;		/* both queues together */
	uint32_t target_ns;		/* PI target delay; 15 ms */
	uint32_t tupdate_ns;		/* PI update interval; 16 ms */
	uint32_t alpha_mhz;		/* integral gain in mHz; 160 = 0.16 Hz */
	uint32_t beta_mhz;		/* proportional gain; 3200 = 3.2 Hz */
	uint32_t step_thresh_ns;	/* L queue step marking; 1 ms */
	uint32_t coupling_factor;	/* k; 2 */
	uint32_t c_protection_pct;	/* classic WRR weight in %; 10 */
	uint32_t mtu_bytes;		/* 2-MTU floor and WRR credit; 1500 */
	uint32_t drop_overload;		/* 1: drop classic when k*p' >= 1 */
	uint32_t verdict_guard;		/* AQM_GUARD_*; default DUALPI2 */
	uint32_t step_thresh_pkts;	/* nonzero: L step at this many L
					   packets, step_thresh_ns ignored; 0 */
	uint32_t min_qlen_step;		/* no step mark below this L qlen; 0 */
	uint32_t harm_budget_pct;	/* model signals beyond DualPI2's, in %
					   of DualPI2's own; see the core */
	uint32_t reserved0;		/* must be 0 */
};
AQM_STATIC_ASSERT(sizeof(struct aqm_params) == 64, "aqm_params ABI");

/*
 * What the data path publishes for each enqueued packet.  The deadline is
 * the data path's estimate of when the packet will be dequeued: a verdict
 * that arrives later cannot be applied.
 */
struct aqm_state_rec {
	uint64_t seq;			/* per-instance packet sequence */
	uint64_t ts_ns;			/* enqueue time, host clock */
	uint64_t deadline_ns;		/* estimated dequeue time */
	uint64_t rate_bps;		/* recent dequeue rate, bytes/s */
	uint32_t len;			/* bytes */
	uint8_t	 queue;			/* AQM_QUEUE_* */
	uint8_t	 ecn;			/* AQM_ECN_* */
	uint16_t flags;			/* AQM_STATE_F_* */
	uint32_t backlog_pkts[AQM_NQUEUES];	/* after this enqueue */
	uint32_t backlog_bytes[AQM_NQUEUES];
	uint32_t sojourn_ns[AQM_NQUEUES];	/* head-of-line, saturating */
	uint32_t prob_base;		/* p' */
	uint32_t prob_c;		/* p_C = p'^2 */
	uint32_t prob_cl;		/* p_CL = k * p', saturating */
	uint32_t reserved;
};
AQM_STATIC_ASSERT(sizeof(struct aqm_state_rec) == 80, "aqm_state_rec ABI");

/* What the daemon sends back. */
struct aqm_verdict_rec {
	uint64_t seq;			/* the packet it is for */
	uint32_t action;		/* AQM_ACT_* */
	uint32_t model_tag;		/* daemon's model version, for counting */
};
AQM_STATIC_ASSERT(sizeof(struct aqm_verdict_rec) == 16, "aqm_verdict_rec ABI");

/* Everything the data path counts.  Index [q] is AQM_QUEUE_C / _L. */
struct aqm_counters {
	uint64_t pkts_in[AQM_NQUEUES];		/* accepted at enqueue */
	uint64_t bytes_in[AQM_NQUEUES];
	uint64_t pkts_out[AQM_NQUEUES];		/* forwarded (marked or not) */
	uint64_t bytes_out[AQM_NQUEUES];
	uint64_t drops_limit[AQM_NQUEUES];	/* queue limit, at enqueue */
	uint64_t marks_model[AQM_NQUEUES];
	uint64_t drops_model[AQM_NQUEUES];
	uint64_t marks_fallback[AQM_NQUEUES];
	uint64_t drops_fallback[AQM_NQUEUES];
	uint64_t step_marks;			/* part of marks_fallback[L] */
	uint64_t decisions_model;		/* dequeues decided by a verdict */
	uint64_t decisions_fallback;		/* dequeues decided by DualPI2 */
	uint64_t verdicts_applied;
	uint64_t verdicts_late;			/* packet already gone */
	uint64_t verdicts_bad;			/* unknown seq or action */
	uint64_t states_published;
	uint64_t states_lost;			/* state ring full */
	uint64_t channel_errors;		/* corrupted ring seen */
	uint64_t pi_updates;
	uint64_t verdicts_capped[AQM_NQUEUES];	/* refused by the harm budget:
						   DualPI2 decided instead */
	uint64_t states_slot_busy;		/* not published: the verdict
						   slot's packet still queued */
};
AQM_STATIC_ASSERT(sizeof(struct aqm_counters) == 248, "aqm_counters ABI");

/* Region header: written once by whoever creates the region. */
struct aqm_chan_hdr {
	uint32_t magic;
	uint32_t abi_version;
	uint32_t hdr_size;		/* sizeof(struct aqm_chan_hdr) */
	uint32_t state_rec_size;
	uint32_t verdict_rec_size;
	uint32_t state_ring_entries;
	uint32_t verdict_ring_entries;
	uint32_t flags;			/* AQM_CHAN_F_*, updated at run time */
	uint64_t region_size;
	uint64_t state_ring_off;
	uint64_t verdict_ring_off;
	uint32_t producer_gen;		/* bumped by each data path attach */
	uint32_t consumer_gen;		/* bumped by each daemon attach */
};
AQM_STATIC_ASSERT(sizeof(struct aqm_chan_hdr) == 64, "aqm_chan_hdr ABI");

/* One ring index alone on its cache line. */
struct aqm_ring_index {
	uint32_t value;
	uint32_t pad[AQM_CACHELINE / 4 - 1];
};
AQM_STATIC_ASSERT(sizeof(struct aqm_ring_index) == AQM_CACHELINE,
    "aqm_ring_index ABI");

/* The four indices, in this order, from AQM_CHAN_IDX_OFF. */
#define AQM_IDX_STATE_PROD	0	/* written by the data path */
#define AQM_IDX_STATE_CONS	1	/* written by the daemon */
#define AQM_IDX_VERDICT_PROD	2	/* written by the daemon */
#define AQM_IDX_VERDICT_CONS	3	/* written by the data path */
#define AQM_NINDICES		4

/*
 * Control block.  Parameter mailbox: the daemon fills params, then bumps
 * param_req (release); the data path applies them at its next tick, writes
 * param_result (0 or an errno value) and sets param_ack = param_req.
 * Counters: the data path republishes them at each tick under a sequence
 * count (odd while writing) so that readers can retry torn copies.
 */
struct aqm_chan_ctrl {
	uint32_t param_req;
	uint32_t param_ack;
	int32_t	 param_result;
	uint32_t counters_gen;		/* seqcount */
	struct aqm_params params;	/* requested */
	struct aqm_params current;	/* in force, published at tick */
	uint64_t now_ns;		/* data path clock at last publish */
	uint64_t prob_base;		/* p' at last publish */
	struct aqm_counters counters;
	uint8_t	 pad[40];
};
AQM_STATIC_ASSERT(sizeof(struct aqm_chan_ctrl) == 448, "aqm_chan_ctrl ABI");

#define AQM_CHAN_IDX_OFF	64u
#define AQM_CHAN_CTRL_OFF	(AQM_CHAN_IDX_OFF + AQM_NINDICES * AQM_CACHELINE)
#define AQM_CHAN_RINGS_OFF	(AQM_CHAN_CTRL_OFF + 448u)

/* Bytes needed for a region with these ring sizes (entries). */
static inline uint64_t
aqm_chan_region_size(uint32_t state_entries, uint32_t verdict_entries)
{

	return ((uint64_t)AQM_CHAN_RINGS_OFF +
	    (uint64_t)state_entries * sizeof(struct aqm_state_rec) +
	    (uint64_t)verdict_entries * sizeof(struct aqm_verdict_rec));
}

static inline int
aqm_ring_entries_valid(uint32_t n)
{

	return (n >= AQM_RING_MIN_ENTRIES && n <= AQM_RING_MAX_ENTRIES &&
	    (n & (n - 1)) == 0);
}

/*
 * What a side keeps after validating a region: it never reads geometry
 * from shared memory again.
 */
struct aqm_chan {
	uint8_t			*base;
	uint64_t		 size;
	struct aqm_chan_hdr	*hdr;
	struct aqm_ring_index	*idx;		/* AQM_NINDICES of them */
	struct aqm_chan_ctrl	*ctrl;
	struct aqm_state_rec	*states;
	struct aqm_verdict_rec	*verdicts;
	uint32_t		 state_mask;
	uint32_t		 verdict_mask;
	/*
	 * Private copies of the indices this side writes: a peer may scribble
	 * over the shared ones, but cannot move ours.
	 */
	uint32_t		 state_prod;	/* data path */
	uint32_t		 state_cons;	/* daemon */
	uint32_t		 verdict_prod;	/* daemon */
	uint32_t		 verdict_cons;	/* data path */
	/*
	 * The peer's index as last seen: a producer reloads it only when the
	 * ring looks full, so the line it sits on does not bounce per record.
	 */
	uint32_t		 state_cons_seen;	/* data path */
	uint32_t		 verdict_cons_seen;	/* daemon */
};

/* Errors from aqm_chan_init() and aqm_chan_open(): negative, stable. */
#define AQM_CHAN_OK		0
#define AQM_CHAN_ESIZE		(-1)	/* region too small or ring sizes */
#define AQM_CHAN_EMAGIC		(-2)
#define AQM_CHAN_EABI		(-3)	/* ABI version or record sizes */
#define AQM_CHAN_EGEOMETRY	(-4)	/* offsets disagree with sizes */
#define AQM_CHAN_ECORRUPT	(-5)	/* index beyond the ring */

static inline uint32_t
aqm_load_acquire(const uint32_t *p)
{

	return (__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

static inline void
aqm_store_release(uint32_t *p, uint32_t v)
{

	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void
aqm_chan_bind(struct aqm_chan *ch, void *base, uint64_t size,
    uint32_t state_entries, uint32_t verdict_entries)
{
	uint8_t *b = (uint8_t *)base;

	ch->base = b;
	ch->size = size;
	ch->hdr = (struct aqm_chan_hdr *)(void *)b;
	ch->idx = (struct aqm_ring_index *)(void *)(b + AQM_CHAN_IDX_OFF);
	ch->ctrl = (struct aqm_chan_ctrl *)(void *)(b + AQM_CHAN_CTRL_OFF);
	ch->states = (struct aqm_state_rec *)(void *)(b + AQM_CHAN_RINGS_OFF);
	ch->verdicts = (struct aqm_verdict_rec *)(void *)(b +
	    AQM_CHAN_RINGS_OFF +
	    (uint64_t)state_entries * sizeof(struct aqm_state_rec));
	ch->state_mask = state_entries - 1;
	ch->verdict_mask = verdict_entries - 1;
	ch->state_prod = aqm_load_acquire(&ch->idx[AQM_IDX_STATE_PROD].value);
	ch->state_cons = aqm_load_acquire(&ch->idx[AQM_IDX_STATE_CONS].value);
	ch->verdict_prod =
	    aqm_load_acquire(&ch->idx[AQM_IDX_VERDICT_PROD].value);
	ch->verdict_cons =
	    aqm_load_acquire(&ch->idx[AQM_IDX_VERDICT_CONS].value);
	ch->state_cons_seen = ch->state_cons;
	ch->verdict_cons_seen = ch->verdict_cons;
}

/*
 * Lay out a new region in zeroed memory of at least
 * aqm_chan_region_size() bytes.  Used by whoever owns the memory: the
 * kernel module, the Linux host.
 */
static inline int
aqm_chan_init(struct aqm_chan *ch, void *base, uint64_t size,
    uint32_t state_entries, uint32_t verdict_entries)
{
	struct aqm_chan_hdr *h;

	if (!aqm_ring_entries_valid(state_entries) ||
	    !aqm_ring_entries_valid(verdict_entries) ||
	    size < aqm_chan_region_size(state_entries, verdict_entries))
		return (AQM_CHAN_ESIZE);
	aqm_chan_bind(ch, base, size, state_entries, verdict_entries);
	h = ch->hdr;
	h->hdr_size = sizeof(*h);
	h->state_rec_size = sizeof(struct aqm_state_rec);
	h->verdict_rec_size = sizeof(struct aqm_verdict_rec);
	h->state_ring_entries = state_entries;
	h->verdict_ring_entries = verdict_entries;
	h->flags = 0;
	h->region_size = size;
	h->state_ring_off = AQM_CHAN_RINGS_OFF;
	h->verdict_ring_off = AQM_CHAN_RINGS_OFF +
	    (uint64_t)state_entries * sizeof(struct aqm_state_rec);
	h->abi_version = AQM_CHAN_ABI_VERSION;
	/* Magic last: a reader that sees it sees a complete header. */
	__atomic_store_n(&h->magic, AQM_CHAN_MAGIC, __ATOMIC_RELEASE);
	return (AQM_CHAN_OK);
}

/*
 * Validate a region that someone else laid out, copying its geometry.
 * size is what the caller really mapped, never the header's word for it.
 */
static inline int
aqm_chan_open(struct aqm_chan *ch, void *base, uint64_t size)
{
	const struct aqm_chan_hdr *h = (const struct aqm_chan_hdr *)base;
	uint32_t se, ve;

	if (size < AQM_CHAN_RINGS_OFF)
		return (AQM_CHAN_ESIZE);
	if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != AQM_CHAN_MAGIC)
		return (AQM_CHAN_EMAGIC);
	if (h->abi_version != AQM_CHAN_ABI_VERSION ||
	    h->hdr_size != sizeof(struct aqm_chan_hdr) ||
	    h->state_rec_size != sizeof(struct aqm_state_rec) ||
	    h->verdict_rec_size != sizeof(struct aqm_verdict_rec))
		return (AQM_CHAN_EABI);
	se = h->state_ring_entries;
	ve = h->verdict_ring_entries;
	if (!aqm_ring_entries_valid(se) || !aqm_ring_entries_valid(ve) ||
	    aqm_chan_region_size(se, ve) > size)
		return (AQM_CHAN_ESIZE);
	if (h->state_ring_off != AQM_CHAN_RINGS_OFF ||
	    h->verdict_ring_off != AQM_CHAN_RINGS_OFF +
	    (uint64_t)se * sizeof(struct aqm_state_rec))
		return (AQM_CHAN_EGEOMETRY);
	aqm_chan_bind(ch, base, size, se, ve);
	return (AQM_CHAN_OK);
}

/* Records waiting in a ring, or -1 when its indices are impossible. */
static inline int64_t
aqm_ring_pending(uint32_t prod, uint32_t cons, uint32_t mask)
{
	uint32_t n = prod - cons;

	return (n > mask + 1 ? -1 : (int64_t)n);
}

/*
 * Producer side of the state ring (the data path).  Returns 1 when
 * published, 0 when the ring was full, AQM_CHAN_ECORRUPT when the
 * consumer index is impossible.
 */
static inline int
aqm_state_push(struct aqm_chan *ch, const struct aqm_state_rec *rec)
{
	uint32_t prod, cons;
	int64_t used;

	prod = ch->state_prod;
	if (prod - ch->state_cons_seen > ch->state_mask) {
		cons = aqm_load_acquire(&ch->idx[AQM_IDX_STATE_CONS].value);
		used = aqm_ring_pending(prod, cons, ch->state_mask);
		if (used < 0)
			return (AQM_CHAN_ECORRUPT);
		ch->state_cons_seen = cons;
		if ((uint64_t)used > ch->state_mask)
			return (0);
	}
	ch->states[prod & ch->state_mask] = *rec;
	ch->state_prod = prod + 1;
	aqm_store_release(&ch->idx[AQM_IDX_STATE_PROD].value, prod + 1);
	return (1);
}

/*
 * Consumer side of the state ring (the daemon): copy up to max records.
 * Returns how many, or AQM_CHAN_ECORRUPT.
 */
static inline int64_t
aqm_state_pop_batch(struct aqm_chan *ch, struct aqm_state_rec *out,
    uint32_t max)
{
	uint32_t prod, cons, i, n;
	int64_t avail;

	cons = ch->state_cons;
	prod = aqm_load_acquire(&ch->idx[AQM_IDX_STATE_PROD].value);
	avail = aqm_ring_pending(prod, cons, ch->state_mask);
	if (avail < 0)
		return (AQM_CHAN_ECORRUPT);
	n = (uint32_t)avail < max ? (uint32_t)avail : max;
	for (i = 0; i < n; i++)
		out[i] = ch->states[(cons + i) & ch->state_mask];
	ch->state_cons = cons + n;
	aqm_store_release(&ch->idx[AQM_IDX_STATE_CONS].value, cons + n);
	return ((int64_t)n);
}

/*
 * How many of want verdicts fit in the ring now (a producer looks at the
 * consumer's index only when its last view leaves too little room), or
 * AQM_CHAN_ECORRUPT when that index is impossible.  The caller writes them
 * at slots verdict_prod + i, then calls aqm_verdict_publish().
 */
static inline int64_t
aqm_verdict_reserve(struct aqm_chan *ch, uint32_t want)
{
	uint32_t room, cons;
	int64_t used;

	room = ch->verdict_mask + 1 - (ch->verdict_prod - ch->verdict_cons_seen);
	if (room < want) {
		cons = aqm_load_acquire(&ch->idx[AQM_IDX_VERDICT_CONS].value);
		used = aqm_ring_pending(ch->verdict_prod, cons, ch->verdict_mask);
		if (used < 0)
			return (AQM_CHAN_ECORRUPT);
		ch->verdict_cons_seen = cons;
		room = ch->verdict_mask + 1 - (uint32_t)used;
	}
	return ((int64_t)(want < room ? want : room));
}

static inline struct aqm_verdict_rec *
aqm_verdict_slot(struct aqm_chan *ch, uint32_t i)
{

	return (&ch->verdicts[(ch->verdict_prod + i) & ch->verdict_mask]);
}

static inline void
aqm_verdict_publish(struct aqm_chan *ch, uint32_t n)
{

	ch->verdict_prod += n;
	aqm_store_release(&ch->idx[AQM_IDX_VERDICT_PROD].value,
	    ch->verdict_prod);
}

/*
 * Producer side of the verdict ring (the daemon): write up to n verdicts,
 * fewer when the ring is full.  Returns how many, or AQM_CHAN_ECORRUPT.
 */
static inline int64_t
aqm_verdict_push_batch(struct aqm_chan *ch, const struct aqm_verdict_rec *in,
    uint32_t n)
{
	int64_t fit = aqm_verdict_reserve(ch, n);
	uint32_t i;

	for (i = 0; i < (uint32_t)(fit > 0 ? fit : 0); i++)
		*aqm_verdict_slot(ch, i) = in[i];
	if (fit > 0)
		aqm_verdict_publish(ch, (uint32_t)fit);
	return (fit);
}

/*
 * Consumer side of the verdict ring (the data path): copy up to max
 * verdicts.  Returns how many, or AQM_CHAN_ECORRUPT.
 */
static inline int64_t
aqm_verdict_pop_batch(struct aqm_chan *ch, struct aqm_verdict_rec *out,
    uint32_t max)
{
	uint32_t prod, cons, i, n;
	int64_t avail;

	cons = ch->verdict_cons;
	prod = aqm_load_acquire(&ch->idx[AQM_IDX_VERDICT_PROD].value);
	avail = aqm_ring_pending(prod, cons, ch->verdict_mask);
	if (avail < 0)
		return (AQM_CHAN_ECORRUPT);
	n = (uint32_t)avail < max ? (uint32_t)avail : max;
	for (i = 0; i < n; i++)
		out[i] = ch->verdicts[(cons + i) & ch->verdict_mask];
	ch->verdict_cons = cons + n;
	aqm_store_release(&ch->idx[AQM_IDX_VERDICT_CONS].value, cons + n);
	return ((int64_t)n);
}

#endif /* !AQM_CHANNEL_H */
