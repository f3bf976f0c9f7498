/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_core.c: DualPI2 with per-packet state export and deadline verdicts.
 *
 * Fixed point throughout, as Linux sch_dualpi2 does: probabilities are
 * 32-bit fractions of AQM_PROB_ONE, times are nanoseconds.  The PI gains
 * are kept pre-scaled so that one update is two multiplications and a
 * shift (see pi_coef()).
 */

#include "aqm_core.h"

#define NSEC_PER_SEC		1000000000ull
/* Fraction bits of the scaled PI gains. */
#define PI_COEF_SHIFT		20
/* |qdelay differences| are clamped here (4.29 s) so products fit 63 bits. */
#define PI_DELTA_MAX		((int64_t)1 << 32)
/* Idle catch-up: PI updates run per call at most, then time skips. */
#define PI_CATCHUP_MAX		4
/* The PI schedule restarts when the clock is this many updates behind it. */
#define PI_RESYNC_UPDATES	8u
/* |qdelay| itself is clamped here first, so the differences cannot wrap. */
#define PI_QDELAY_MAX		((uint64_t)1 << 33)
/* Service-rate estimators: sample window, first estimate, floor. */
#define RATE_WINDOW_NS		1000000ull
#define RATE_FIRST_SAMPLES	4u
#define RATE_MIN_BPS		1000ull

#define AQM_SEQ_NONE		UINT64_MAX

/* Verdict slot states. */
#define AQM_VS_EMPTY		0u	/* no state published */
#define AQM_VS_WAITING		1u	/* state published, no verdict yet */
#define AQM_VS_VERDICT		2u	/* verdict arrived, packet queued */
#define AQM_VS_DONE		3u	/* verdict withdrawn (emulated lateness) */

#define VSLOT_MASK		(AQM_VSLOTS - 1)
AQM_STATIC_ASSERT((AQM_VSLOTS & VSLOT_MASK) == 0, "AQM_VSLOTS power of 2");

void
aqm_params_default(struct aqm_params *p)
{

	p->limit_pkts = 10000;
	p->limit_bytes = 10000u * 1500u;
	p->target_ns = 15000000;
	p->tupdate_ns = 16000000;
	p->alpha_mhz = 160;
	p->beta_mhz = 3200;
	p->step_thresh_ns = 1000000;
	p->coupling_factor = 2;
	p->c_protection_pct = 10;
	p->mtu_bytes = 1500;
	p->drop_overload = 1;
	p->verdict_guard = AQM_GUARD_DUALPI2;
	p->step_thresh_pkts = 0;
	p->min_qlen_step = 0;
	p->harm_budget_pct = AQM_HARM_BUDGET_DEFAULT;
	p->reserved0 = 0;
}

int
aqm_params_validate(const struct aqm_params *p)
{

	if (p->limit_pkts < 1 || p->limit_pkts > AQM_LIMIT_PKTS_MAX)
		return (AQM_EINVAL);
	if (p->mtu_bytes < 68 || p->mtu_bytes > 65535)
		return (AQM_EINVAL);
	if (p->limit_bytes < p->mtu_bytes || p->limit_bytes > 0x7fffffffu)
		return (AQM_EINVAL);
	if (p->target_ns < 1000 || p->target_ns > NSEC_PER_SEC)
		return (AQM_EINVAL);
	if (p->tupdate_ns < 100000 || p->tupdate_ns > NSEC_PER_SEC)
		return (AQM_EINVAL);
	if (p->alpha_mhz > 100000 || p->beta_mhz > 100000)
		return (AQM_EINVAL);
	if (p->step_thresh_ns < 1000 || p->step_thresh_ns > NSEC_PER_SEC)
		return (AQM_EINVAL);
	if (p->coupling_factor < 1 || p->coupling_factor > 255)
		return (AQM_EINVAL);
	if (p->c_protection_pct > 100)
		return (AQM_EINVAL);
	if (p->drop_overload > 1 || p->verdict_guard > AQM_GUARD_DUALPI2)
		return (AQM_EINVAL);
	if (p->step_thresh_pkts > AQM_LIMIT_PKTS_MAX ||
	    p->min_qlen_step > AQM_LIMIT_PKTS_MAX)
		return (AQM_EINVAL);
	if ((p->harm_budget_pct > AQM_HARM_BUDGET_MAX &&
	    p->harm_budget_pct != AQM_HARM_BUDGET_OFF) || p->reserved0 != 0)
		return (AQM_EINVAL);
	return (AQM_OK);
}

uint64_t
aqm_core_size(void)
{

	return (sizeof(struct aqm_core));
}

/*
 * A gain in mHz scaled so that (delta_ns * coef) >> PI_COEF_SHIFT is the
 * probability change in AQM_PROB_ONE units:
 *   coef = gain_mhz / 1000 Hz * 1e-9 s/ns * 2^32 * 2^20
 *        = gain_mhz * 2^52 / 1e12.
 * 2^52 / 1e6 = 4503599627.37 keeps the intermediate below 2^50.
 */
static int64_t
pi_coef(uint32_t gain_mhz)
{

	return ((int64_t)(((uint64_t)gain_mhz * 4503599627ull) / 1000000ull));
}

static int64_t
clamp_delta(int64_t d)
{

	if (d > PI_DELTA_MAX)
		return (PI_DELTA_MAX);
	if (d < -PI_DELTA_MAX)
		return (-PI_DELTA_MAX);
	return (d);
}

static void
apply_params(struct aqm_core *c, const struct aqm_params *p)
{

	c->params = *p;
	c->alpha_coef = pi_coef(p->alpha_mhz);
	c->beta_coef = pi_coef(p->beta_mhz);
	c->w_classic = (int32_t)p->c_protection_pct;
	c->w_l4s = 100 - (int32_t)p->c_protection_pct;
}

static void
reset_credit(struct aqm_core *c)
{

	/* Negative: the L queue goes first after an idle period. */
	c->c_credit = (int64_t)c->params.mtu_bytes *
	    (c->w_classic - c->w_l4s);
}

int
aqm_core_init(struct aqm_core *c, const struct aqm_params *p, uint64_t seed,
    uint64_t now_ns)
{
	struct aqm_params defaults;

	if (p == (const struct aqm_params *)0) {
		aqm_params_default(&defaults);
		p = &defaults;
	}
	if (aqm_params_validate(p) != AQM_OK)
		return (AQM_EINVAL);
	/* The builtin needs no header; the kernel and libc both provide it. */
	__builtin_memset(c, 0, sizeof(*c));
	apply_params(c, p);
	reset_credit(c);
	c->next_update_ns = now_ns + p->tupdate_ns;
	c->rng = seed ^ 0x9e3779b97f4a7c15ull;
	if (c->rng == 0)
		c->rng = 0x9e3779b97f4a7c15ull;
	return (AQM_OK);
}

int
aqm_core_set_params(struct aqm_core *c, const struct aqm_params *p)
{
	uint32_t old_tupdate;

	if (aqm_params_validate(p) != AQM_OK)
		return (AQM_EINVAL);
	old_tupdate = c->params.tupdate_ns;
	apply_params(c, p);
	if (p->tupdate_ns < old_tupdate &&
	    c->next_update_ns > c->last_update_ns + p->tupdate_ns)
		c->next_update_ns = c->last_update_ns + p->tupdate_ns;
	if (!p->drop_overload && c->prob > AQM_PROB_ONE / p->coupling_factor)
		c->prob = AQM_PROB_ONE / p->coupling_factor;
	return (AQM_OK);
}

void
aqm_core_get_params(const struct aqm_core *c, struct aqm_params *p)
{

	*p = c->params;
}

/* xorshift64*: good enough for marking rolls, and seedable for tests. */
static uint32_t
rng_u32(struct aqm_core *c)
{
	uint64_t x = c->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	c->rng = x;
	return ((uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32));
}

/* True with probability p / 2^32 (p may exceed AQM_PROB_ONE: always). */
static int
roll(struct aqm_core *c, uint64_t p)
{

	return ((uint64_t)rng_u32(c) < p);
}

uint32_t
aqm_prob_base(const struct aqm_core *c)
{

	return (c->prob);
}

uint32_t
aqm_prob_c(const struct aqm_core *c)
{

	return ((uint32_t)(((uint64_t)c->prob * c->prob) >> 32));
}

uint32_t
aqm_prob_cl(const struct aqm_core *c)
{
	uint64_t p = (uint64_t)c->prob * c->params.coupling_factor;

	return (p > AQM_PROB_ONE ? AQM_PROB_ONE : (uint32_t)p);
}

static uint64_t
head_sojourn(const struct aqm_core *c, unsigned q, uint64_t now_ns)
{

	if (c->qlen[q] == 0 || now_ns < c->head_ts[q])
		return (0);
	return (now_ns - c->head_ts[q]);
}

static uint64_t
head_sojourn_sat(const struct aqm_core *c, unsigned q, uint64_t now_ns)
{
	uint64_t t = head_sojourn(c, q, now_ns);

	return (t > UINT32_MAX ? UINT32_MAX : t);
}

/*
 * One PI2 update on the larger head-of-line sojourn of the two queues:
 * p' += alpha * (qdelay - target) + beta * (qdelay - prev_qdelay).
 */
static void
pi_update(struct aqm_core *c, uint64_t now_ns)
{
	uint64_t qc, ql, qdelay, step;
	int64_t delta;
	uint32_t p;

	qc = head_sojourn(c, AQM_QUEUE_C, now_ns);
	ql = head_sojourn(c, AQM_QUEUE_L, now_ns);
	qdelay = qc > ql ? qc : ql;
	/* Clamp before any signed arithmetic: a sojourn may be near 2^64. */
	if (qdelay > PI_QDELAY_MAX)
		qdelay = PI_QDELAY_MAX;
	delta = clamp_delta((int64_t)qdelay - (int64_t)c->params.target_ns) *
	    c->alpha_coef;
	delta += clamp_delta((int64_t)qdelay - (int64_t)c->last_qdelay_ns) *
	    c->beta_coef;
	p = c->prob;
	if (delta >= 0) {
		step = (uint64_t)delta >> PI_COEF_SHIFT;
		p = step >= (uint64_t)(AQM_PROB_ONE - p) ? AQM_PROB_ONE :
		    p + (uint32_t)step;
	} else {
		step = (uint64_t)(-delta) >> PI_COEF_SHIFT;
		p = step >= p ? 0 : p - (uint32_t)step;
	}
	/* Without overload dropping, keep p_CL <= 1 for window fairness. */
	if (!c->params.drop_overload &&
	    p > AQM_PROB_ONE / c->params.coupling_factor)
		p = AQM_PROB_ONE / c->params.coupling_factor;
	c->prob = p;
	c->last_qdelay_ns = qdelay;
	c->last_update_ns = now_ns;
	c->cnt.pi_updates++;
}

static void
pi_catch_up_slow(struct aqm_core *c, uint64_t now_ns)
{
	uint32_t tupdate = c->params.tupdate_ns;
	int i;

	/*
	 * The clock went backwards by more than a few intervals: start the
	 * schedule again from now rather than wait for the clock to catch up
	 * with it.  (A timestamp a little older than the last update, which
	 * a host may pass, is not worth a restart.)
	 */
	if (c->next_update_ns > now_ns + (uint64_t)tupdate * PI_RESYNC_UPDATES) {
		c->last_update_ns = now_ns;
		c->next_update_ns = now_ns + tupdate;
	}
	for (i = 0; i < PI_CATCHUP_MAX && now_ns >= c->next_update_ns; i++) {
		pi_update(c, now_ns);
		c->next_update_ns += c->params.tupdate_ns;
	}
	if (now_ns >= c->next_update_ns)
		c->next_update_ns = now_ns + c->params.tupdate_ns;
}

/* Due PI updates; the common case (none due) stays inline. */
static inline void
pi_catch_up(struct aqm_core *c, uint64_t now_ns)
{

	if (now_ns < c->next_update_ns && c->next_update_ns - now_ns <=
	    (uint64_t)c->params.tupdate_ns * PI_RESYNC_UPDATES)
		return;
	pi_catch_up_slow(c, now_ns);
}

static void
channel_failed(struct aqm_core *c)
{

	c->cnt.channel_errors++;
	aqm_detach(c);
}

/* -- Verdict slots ------------------------------------------------------ */

/*
 * Position of seq among the packets queued in q ([head, tail) of its ring,
 * sequence numbers increasing), or -1.  At most 15 probes.
 */
static int64_t
vring_find(const struct aqm_vring *r, uint64_t seq)
{
	uint32_t lo = r->head, n = r->tail - r->head, half;
	uint64_t s;

	if (n == 0 || n > AQM_VSLOTS)
		return (-1);
	if (r->slot[lo & VSLOT_MASK].seq == seq)	/* the usual dequeue */
		return ((int64_t)lo);
	if (seq < r->slot[lo & VSLOT_MASK].seq ||
	    seq > r->slot[(r->tail - 1) & VSLOT_MASK].seq)
		return (-1);
	while (n > 0) {
		half = n / 2;
		s = r->slot[(lo + half) & VSLOT_MASK].seq;
		if (s == seq)
			return ((int64_t)(lo + half));
		if (s < seq) {
			lo += half + 1;
			n -= half + 1;
		} else {
			n = half;
		}
	}
	return (-1);
}

/* Slot index of seq in either queue's ring, or -1; *qout its queue. */
static int64_t
vslot_find(const struct aqm_core *c, uint64_t seq, unsigned *qout)
{
	const struct aqm_vring *r;
	uint32_t h, i;
	int64_t pos;
	unsigned q;

	/* The hint written at enqueue, if no later packet took it since. */
	h = c->vhint[seq & VSLOT_MASK];
	q = h >> 31;
	i = h & VSLOT_MASK;
	r = &c->vq[q];
	if (r->slot[i].seq == seq) {
		if (((i - r->head) & VSLOT_MASK) >= r->tail - r->head)
			return (-1);		/* it left */
		*qout = q;
		return ((int64_t)i);
	}
	/* Overwritten by a later packet's hint: search both queues. */
	for (q = 0; q < AQM_NQUEUES; q++) {
		pos = vring_find(&c->vq[q], seq);
		if (pos >= 0) {
			*qout = q;
			return (pos & VSLOT_MASK);
		}
	}
	return (-1);
}

/*
 * The packet seq leaves queue q: its slot (and any older one the host
 * flushed without telling) is released.  Returns the slot, or -1 when the
 * packet had none.
 */
static int64_t
vslot_release(struct aqm_core *c, unsigned q, uint64_t seq)
{
	struct aqm_vring *r = &c->vq[q];
	int64_t pos;

	pos = vring_find(r, seq);
	if (pos < 0)
		return (-1);
	r->head = (uint32_t)pos + 1;
	return (pos & VSLOT_MASK);
}

/* -- Service rates and deadlines ---------------------------------------- */

/*
 * Add one gap to a rate estimate; close its window after 1 ms of samples
 * (the first after RATE_FIRST_SAMPLES gaps, so that an estimate exists
 * within a few packets) into an EWMA of 1/8.
 */
static void
rate_add(uint64_t *bps, uint64_t *npk, uint64_t *bytes, uint64_t *ns,
    uint32_t *samples, uint32_t len, uint64_t gap_ns)
{
	uint64_t sample;

	*bytes += len;
	*ns += gap_ns;
	if (*samples < RATE_FIRST_SAMPLES)
		(*samples)++;
	if (*ns == 0 || (*ns < RATE_WINDOW_NS &&
	    (*bps != 0 || *samples < RATE_FIRST_SAMPLES)))
		return;
	sample = *bytes * NSEC_PER_SEC / *ns;
	*bps = *bps == 0 ? sample : (*bps * 7 + sample) / 8;
	*npk = 1024ull * NSEC_PER_SEC /
	    (*bps > RATE_MIN_BPS ? *bps : RATE_MIN_BPS);
	*bytes = 0;
	*ns = 0;
}

/*
 * The link's service rate over busy periods (bytes of the previous packet
 * per gap), and queue q's drain rate while q stays backlogged: what q
 * really gets from the WRR scheduler beside the other queue's load.
 */
static void
rate_update(struct aqm_core *c, uint64_t now_ns, unsigned q, uint32_t len)
{
	int busy = c->qlen[0] + c->qlen[1] != 0;

	if (c->last_deq_busy && now_ns > c->last_deq_ns)
		rate_add(&c->rate_bps, &c->ns_per_kbyte, &c->rate_bytes,
		    &c->rate_ns, &c->rate_samples, c->last_deq_len,
		    now_ns - c->last_deq_ns);
	c->last_deq_ns = now_ns;
	c->last_deq_len = len;
	c->last_deq_busy = busy;

	/* The queues' drain rates serve only the deadlines of states. */
	if (!c->chan_attached)
		return;
	if (c->qlast_busy[q] && now_ns >= c->qlast_deq_ns[q])
		rate_add(&c->qrate_bps[q], &c->q_ns_per_kbyte[q],
		    &c->qrate_bytes[q], &c->qrate_ns[q], &c->qrate_samples[q],
		    c->qlast_deq_len[q], now_ns - c->qlast_deq_ns[q]);
	c->qlast_deq_ns[q] = now_ns;
	c->qlast_deq_len[q] = len;
	c->qlast_busy[q] = c->qlen[q] != 0;
}

/*
 * How long a packet of len bytes, with ahead bytes before it in queue q,
 * will wait to be dequeued.  Queue q drains at its own measured rate (the
 * WRR share and whatever the other queue leaves it); the packet's own
 * transmission is not part of the wait.  Before q's drain rate is known,
 * the link rate at q's WRR share (the full rate when the other queue is
 * empty) stands in; before any rate is known, a packet with anything ahead
 * of it (or a classic one behind a busy L queue) is expected to wait
 * target_ns, the sojourn DualPI2 steers to.
 */
static uint64_t
expected_wait(const struct aqm_core *c, unsigned q, uint32_t ahead,
    uint32_t len)
{
	uint64_t npk, link, wait, own;
	unsigned other = q ^ 1;
	int32_t share;

	link = c->ns_per_kbyte;
	npk = c->q_ns_per_kbyte[q];
	if (npk == 0 && link != 0) {
		share = c->qlen[other] == 0 ? 100 :
		    q == AQM_QUEUE_C ? c->w_classic : c->w_l4s;
		if (share < 1)
			share = 1;
		npk = link * 100 / (uint32_t)share;
	}
	if (npk == 0)
		return (ahead == 0 && (q == AQM_QUEUE_L || c->qlen[other] == 0) ?
		    0 : c->params.target_ns);
	if (npk > UINT32_MAX)
		npk = UINT32_MAX;
	if (link == 0 || link > npk)
		link = npk;
	wait = (((uint64_t)ahead + len) * npk) >> 10;
	own = ((uint64_t)len * link) >> 10;
	return (wait > own ? wait - own : 0);
}

/*
 * Publish the state of a packet just enqueued, with ahead bytes before it
 * in its queue.  Returns 1 when published.
 */
static int
publish_state(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt,
    uint32_t ahead_bytes, int first)
{
	struct aqm_state_rec r;
	unsigned q = pkt->queue;
	int rc;

	r.seq = pkt->seq;
	r.ts_ns = now_ns;
	r.deadline_ns = now_ns + expected_wait(c, q, ahead_bytes, pkt->len);
	r.rate_bps = c->rate_bps;
	r.len = pkt->len;
	r.queue = pkt->queue;
	r.ecn = pkt->ecn;
	r.flags = first ? AQM_STATE_F_FIRST : 0;
	r.backlog_pkts[0] = c->qlen[0];
	r.backlog_pkts[1] = c->qlen[1];
	r.backlog_bytes[0] = c->qbytes[0];
	r.backlog_bytes[1] = c->qbytes[1];
	r.sojourn_ns[0] = (uint32_t)head_sojourn_sat(c, 0, now_ns);
	r.sojourn_ns[1] = (uint32_t)head_sojourn_sat(c, 1, now_ns);
	r.prob_base = c->prob;
	r.prob_c = aqm_prob_c(c);
	r.prob_cl = aqm_prob_cl(c);
	r.reserved = 0;
	rc = aqm_state_push(&c->chan, &r);
	if (rc == 1) {
		c->cnt.states_published++;
		return (1);
	}
	if (rc == 0)
		c->cnt.states_lost++;
	else
		channel_failed(c);
	return (0);
}

int
aqm_enqueue(struct aqm_core *c, uint64_t now_ns, uint32_t len, uint8_t ecn,
    struct aqm_pkt *pkt)
{
	struct aqm_vring *r;
	uint32_t ahead, slot;
	unsigned q;
	int first;

	ecn &= 3;
	q = (ecn == AQM_ECN_ECT1 || ecn == AQM_ECN_CE) ? AQM_QUEUE_L :
	    AQM_QUEUE_C;
	pkt->ts_ns = now_ns;
	pkt->len = len;
	pkt->queue = (uint8_t)q;
	pkt->ecn = ecn;
	pkt->flags = 0;
	pi_catch_up(c, now_ns);

	/* The limits hold whatever any model would say. */
	if (c->qlen[0] + c->qlen[1] >= c->params.limit_pkts ||
	    (uint64_t)c->qbytes[0] + c->qbytes[1] + len >
	    c->params.limit_bytes) {
		pkt->seq = AQM_SEQ_NONE;
		c->cnt.drops_limit[q]++;
		return (AQM_V_DROP);
	}

	pkt->seq = c->next_seq++;
	/* As Linux: the step applies if the L queue held min_qlen_step. */
	if (q == AQM_QUEUE_L && c->qlen[q] < c->params.min_qlen_step)
		pkt->flags |= AQM_PKT_F_NOSTEP;
	ahead = c->qbytes[q];
	first = c->qlen[q] == 0;
	if (first)
		c->head_ts[q] = now_ns;
	c->qlen[q]++;
	c->qbytes[q] += len;
	c->cnt.pkts_in[q]++;
	c->cnt.bytes_in[q] += len;

	/*
	 * With a channel, its verdict slot.  A queue never holds AQM_VSLOTS
	 * packets, so the ring is full only if the host lost track of
	 * packets: then this packet goes without a slot (and without a state)
	 * rather than take the slot of one still queued.
	 */
	if (!c->chan_attached)
		return (AQM_V_PASS);
	r = &c->vq[q];
	if (r->tail - r->head >= AQM_VSLOTS) {
		c->cnt.states_slot_busy++;
		return (AQM_V_PASS);
	}
	slot = r->tail & VSLOT_MASK;
	r->slot[slot].seq = pkt->seq;
	r->slot[slot].state = AQM_VS_EMPTY;
	r->slot[slot].action = AQM_ACT_ENQUEUE;
	r->tail++;
	c->vhint[pkt->seq & VSLOT_MASK] = (uint32_t)q << 31 | slot;
	if (publish_state(c, now_ns, pkt, ahead, first))
		r->slot[slot].state = AQM_VS_WAITING;
	return (AQM_V_PASS);
}

int
aqm_select(struct aqm_core *c, uint64_t now_ns)
{

	(void)now_ns;
	if (c->qlen[AQM_QUEUE_L] != 0 &&
	    (c->qlen[AQM_QUEUE_C] == 0 || c->c_credit <= 0))
		return (AQM_QUEUE_L);
	if (c->qlen[AQM_QUEUE_C] != 0)
		return (AQM_QUEUE_C);
	reset_credit(c);
	return (AQM_SELECT_NONE);
}

/* Take one verdict off the ring: file it with its packet, or count it. */
static void
file_verdict(struct aqm_core *c, uint64_t seq, uint32_t action)
{
	struct aqm_vring *r;
	int64_t slot;
	unsigned q;

	if (action >= AQM_NACTIONS || seq >= c->next_seq) {
		c->cnt.verdicts_bad++;
		return;
	}
	slot = vslot_find(c, seq, &q);
	if (slot < 0) {
		/* Left already (or an earlier instance's packet). */
		c->cnt.verdicts_late++;
		return;
	}
	r = &c->vq[q];
	switch (r->slot[slot].state) {
	case AQM_VS_WAITING:
		r->slot[slot].state = AQM_VS_VERDICT;
		r->slot[slot].action = action;
		break;
	case AQM_VS_DONE:
		c->cnt.verdicts_late++;
		break;
	default:
		/* A second verdict, or one for a state never published. */
		c->cnt.verdicts_bad++;
		break;
	}
}

/* File up to AQM_VERDICT_BURST verdicts; returns how many were waiting. */
static int64_t
drain_verdicts(struct aqm_core *c)
{
	struct aqm_chan *ch = &c->chan;
	const struct aqm_verdict_rec *v;
	uint32_t prod, cons, i, n;
	uint64_t seq;
	uint32_t action;
	int64_t avail;

	prod = aqm_load_acquire(&ch->idx[AQM_IDX_VERDICT_PROD].value);
	cons = ch->verdict_cons;
	avail = aqm_ring_pending(prod, cons, ch->verdict_mask);
	if (avail < 0) {
		channel_failed(c);
		return (0);
	}
	n = avail < (int64_t)AQM_VERDICT_BURST ? (uint32_t)avail :
	    AQM_VERDICT_BURST;
	for (i = 0; i < n; i++) {
		/* Read each field once: the daemon may be writing anything. */
		v = &ch->verdicts[(cons + i) & ch->verdict_mask];
		seq = *(volatile const uint64_t *)&v->seq;
		action = *(volatile const uint32_t *)&v->action;
		file_verdict(c, seq, action);
	}
	if (n != 0) {
		ch->verdict_cons = cons + n;
		aqm_store_release(&ch->idx[AQM_IDX_VERDICT_CONS].value,
		    cons + n);
	}
	return (avail);
}

/*
 * The native L4S step, as Linux sch_dualpi2: an L packet is marked when
 * its sojourn reached step_thresh_ns or, with step_thresh_pkts set, when
 * the L queue it leaves behind holds more than that many packets; not when
 * the L queue held fewer than min_qlen_step packets at its enqueue.
 * *stepped says the step made a mark; the caller counts it once final.
 */
static uint32_t
step_decide(const struct aqm_core *c, uint64_t now_ns,
    const struct aqm_pkt *pkt, int *stepped)
{

	if (pkt->queue != AQM_QUEUE_L || (pkt->flags & AQM_PKT_F_NOSTEP))
		return (AQM_V_PASS);
	if (c->params.step_thresh_pkts != 0) {
		if (c->qlen[AQM_QUEUE_L] <= c->params.step_thresh_pkts)
			return (AQM_V_PASS);
	} else if (now_ns < pkt->ts_ns ||
	    now_ns - pkt->ts_ns < c->params.step_thresh_ns) {
		return (AQM_V_PASS);
	}
	if (pkt->ecn == AQM_ECN_NOT_ECT)
		return (AQM_V_DROP);
	*stepped = 1;
	return (AQM_V_MARK);
}

/* DualPI2's own decision for a packet leaving queue q. */
static uint32_t
dualpi2_decide(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt,
    int *stepped)
{
	uint64_t lprob, p;
	uint32_t verdict = AQM_V_PASS;
	int overload, not_ect;

	p = c->prob;
	lprob = p * c->params.coupling_factor;
	overload = lprob > AQM_PROB_ONE;
	not_ect = pkt->ecn == AQM_ECN_NOT_ECT;

	/* The PI-driven part waits for a backlog of 2 MTU. */
	if ((uint64_t)c->qbytes[0] + c->qbytes[1] >=
	    2ull * c->params.mtu_bytes) {
		if (pkt->queue == AQM_QUEUE_C) {
			if (roll(c, p) && roll(c, p))
				verdict = overload || not_ect ? AQM_V_DROP :
				    AQM_V_MARK;
		} else if (overload) {
			verdict = c->params.drop_overload && roll(c, p) &&
			    roll(c, p) ? AQM_V_DROP : AQM_V_MARK;
		} else if (roll(c, lprob)) {
			verdict = not_ect ? AQM_V_DROP : AQM_V_MARK;
		}
	}
	/* Native L4S step, as Linux: not subject to the 2-MTU floor. */
	if (verdict == AQM_V_PASS)
		verdict = step_decide(c, now_ns, pkt, stepped);
	return (verdict);
}

/* Severity order of verdicts: pass < mark < drop. */
static int
verdict_rank(uint32_t verdict)
{

	return (verdict == AQM_V_DROP ? 2 : verdict == AQM_V_MARK ? 1 : 0);
}

/*
 * The guard of a model's verdict: DualPI2's decision (or its step alone)
 * where that is the stronger, taken from the packet's own sojourn.
 */
static uint32_t
guard_decide(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt,
    int *stepped)
{

	switch (c->params.verdict_guard) {
	case AQM_GUARD_DUALPI2:
		return (dualpi2_decide(c, now_ns, pkt, stepped));
	case AQM_GUARD_STEP:
		return (step_decide(c, now_ns, pkt, stepped));
	default:
		return (AQM_V_PASS);
	}
}

/* -- Harm budget ------------------------------------------------------- */

#define HARM_ONE		((uint64_t)1 << 32)	/* one signal */

static int
above_floor(const struct aqm_core *c)
{

	return ((uint64_t)c->qbytes[0] + c->qbytes[1] >=
	    2ull * c->params.mtu_bytes);
}

/*
 * What DualPI2 itself signals for a packet leaving now, as a probability
 * (HARM_ONE = 1), without rolling: p_C for a classic packet; for an L
 * packet p_CL (1 in overload), or 1 where the step applies.
 */
static uint64_t
dualpi2_signal_prob(const struct aqm_core *c, uint64_t now_ns,
    const struct aqm_pkt *pkt)
{
	uint64_t lprob;
	int stepped = 0;

	if (pkt->queue == AQM_QUEUE_C)
		return (aqm_prob_c(c));
	if (step_decide(c, now_ns, pkt, &stepped) != AQM_V_PASS)
		return (HARM_ONE);
	lprob = (uint64_t)c->prob * c->params.coupling_factor;
	return (lprob > HARM_ONE ? HARM_ONE : lprob);
}

/*
 * Every packet leaving queue q above DualPI2's 2-MTU floor adds what
 * DualPI2 signals for it, times harm_budget_pct / 100, to q's credit
 * (at most AQM_HARM_CREDIT_MAX signals); nothing is added below the floor.
 */
static void
harm_accrue(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt)
{
	uint64_t *credit = &c->harm_credit[pkt->queue & 1];
	uint32_t pct = c->params.harm_budget_pct;

	if (pct == AQM_HARM_BUDGET_OFF || !above_floor(c))
		return;
	*credit += dualpi2_signal_prob(c, now_ns, pkt) * pct / 100;
	if (*credit > AQM_HARM_CREDIT_MAX * HARM_ONE)
		*credit = AQM_HARM_CREDIT_MAX * HARM_ONE;
}

/*
 * A verdict that signals more than the guard's decision (a mark or drop
 * where DualPI2 would pass, a drop where it would mark) spends one signal
 * of its queue's credit; without one, or below the 2-MTU floor, it is
 * refused.  Returns 1 when the verdict may stand.
 */
static int
harm_spend(struct aqm_core *c, unsigned q)
{

	if (c->params.harm_budget_pct == AQM_HARM_BUDGET_OFF)
		return (1);
	if (!above_floor(c) || c->harm_credit[q] < HARM_ONE) {
		c->cnt.verdicts_capped[q]++;
		return (0);
	}
	c->harm_credit[q] -= HARM_ONE;
	return (1);
}

static void
dequeue_accounting(struct aqm_core *c, const struct aqm_pkt *pkt,
    uint64_t next_head_ts)
{
	unsigned q = pkt->queue & 1;

	if (c->qlen[q] != 0)
		c->qlen[q]--;
	c->qbytes[q] = c->qbytes[q] >= pkt->len ? c->qbytes[q] - pkt->len : 0;
	c->head_ts[q] = c->qlen[q] != 0 ? next_head_ts : 0;
}

void
aqm_dequeue(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt,
    uint64_t next_head_ts, struct aqm_decision *d)
{
	unsigned q = pkt->queue & 1, other = q ^ 1;
	struct aqm_vring *r = &c->vq[q];
	uint32_t guard;
	int64_t pos, slot;
	int other_busy, stepped = 0;

	dequeue_accounting(c, pkt, next_head_ts);
	pi_catch_up(c, now_ns);
	rate_update(c, now_ns, q, pkt->len);
	if (c->chan_attached)
		harm_accrue(c, now_ns, pkt);
	pos = r->tail != r->head ? vring_find(r, pkt->seq) : -1;
	slot = pos >= 0 ? (pos & VSLOT_MASK) : -1;
	/*
	 * Look at the verdict ring only while this packet's verdict is
	 * missing: its index sits on a line the daemon writes, and a daemon
	 * that is ahead has filed the verdicts of many packets at one look.
	 */
	if (c->chan_attached && slot >= 0 && r->slot[slot].state == AQM_VS_WAITING)
		drain_verdicts(c);

	if (c->chan_attached && slot >= 0 &&
	    r->slot[slot].state == AQM_VS_VERDICT && c->verdict_delay_ns != 0 &&
	    now_ns - pkt->ts_ns < c->verdict_delay_ns) {
		/* In the emulated world this verdict came after the packet left. */
		r->slot[slot].state = AQM_VS_DONE;
		c->cnt.verdicts_late++;
	}
	if (c->chan_attached && slot >= 0 &&
	    r->slot[slot].state == AQM_VS_VERDICT &&
	    !(c->chan.hdr->flags & AQM_CHAN_F_PAUSED)) {
		d->source = AQM_SRC_MODEL;
		switch (r->slot[slot].action) {
		case AQM_ACT_DROP:
			d->verdict = AQM_V_DROP;
			break;
		case AQM_ACT_MARK:
			/* RFC 3168: congestion on a Not-ECT packet is a drop. */
			d->verdict = pkt->ecn == AQM_ECN_NOT_ECT ? AQM_V_DROP :
			    AQM_V_MARK;
			break;
		default:
			d->verdict = AQM_V_PASS;
			break;
		}
		c->cnt.verdicts_applied++;
		/*
		 * Every verdict, drops included, meets the guard; one that
		 * signals beyond it meets the harm budget.
		 */
		guard = guard_decide(c, now_ns, pkt, &stepped);
		/*
		 * An ECN-capable packet's congestion signal is a mark: a model
		 * drops one only where DualPI2 itself drops it.
		 */
		if (d->verdict == AQM_V_DROP && pkt->ecn != AQM_ECN_NOT_ECT &&
		    guard != AQM_V_DROP &&
		    c->params.harm_budget_pct != AQM_HARM_BUDGET_OFF)
			d->verdict = AQM_V_MARK;
		if (verdict_rank(guard) >= verdict_rank(d->verdict) ||
		    !harm_spend(c, q)) {
			if (verdict_rank(guard) != verdict_rank(d->verdict))
				d->source = AQM_SRC_FALLBACK;
			d->verdict = guard;
		}
	} else {
		d->source = AQM_SRC_FALLBACK;
		d->verdict = dualpi2_decide(c, now_ns, pkt, &stepped);
	}
	if (pos >= 0)
		r->head = (uint32_t)pos + 1;	/* releases its slot */
	if (d->source == AQM_SRC_MODEL) {
		c->cnt.decisions_model++;
		if (d->verdict == AQM_V_DROP)
			c->cnt.drops_model[q]++;
		else if (d->verdict == AQM_V_MARK)
			c->cnt.marks_model[q]++;
	} else {
		c->cnt.decisions_fallback++;
		if (d->verdict == AQM_V_DROP)
			c->cnt.drops_fallback[q]++;
		else if (d->verdict == AQM_V_MARK)
			c->cnt.marks_fallback[q]++;
		/* A step mark counts only where it is the decision taken. */
		if (stepped)
			c->cnt.step_marks++;
	}

	if (d->verdict == AQM_V_DROP)
		return;
	c->cnt.pkts_out[q]++;
	c->cnt.bytes_out[q] += pkt->len;
	/* WRR classic protection: only packets sent move the credit. */
	other_busy = c->qlen[other] != 0;
	if (other_busy && q == AQM_QUEUE_L)
		c->c_credit += (int64_t)c->w_classic * pkt->len;
	else if (other_busy)
		c->c_credit -= (int64_t)c->w_l4s * pkt->len;
}

int64_t
aqm_collect_verdicts(struct aqm_core *c)
{

	return (c->chan_attached ? drain_verdicts(c) : 0);
}

int
aqm_verdict_ready(const struct aqm_core *c, uint64_t seq)
{
	int64_t slot;
	unsigned q;

	slot = vslot_find(c, seq, &q);
	return (slot >= 0 && c->vq[q].slot[slot].state == AQM_VS_VERDICT);
}

void
aqm_set_verdict_delay(struct aqm_core *c, uint64_t ns)
{

	c->verdict_delay_ns = ns;
}

void
aqm_forget(struct aqm_core *c, const struct aqm_pkt *pkt,
    uint64_t next_head_ts)
{

	dequeue_accounting(c, pkt, next_head_ts);
	(void)vslot_release(c, pkt->queue & 1, pkt->seq);
}

static void
serve_mailbox(struct aqm_core *c)
{
	struct aqm_chan_ctrl *ctrl = c->chan.ctrl;
	struct aqm_params req;
	uint32_t seq;
	int rc;

	seq = aqm_load_acquire(&ctrl->param_req);
	if (seq == c->param_ack)
		return;
	req = *(volatile struct aqm_params *)&ctrl->params;
	rc = aqm_core_set_params(c, &req);
	__atomic_store_n(&ctrl->param_result, (int32_t)rc, __ATOMIC_RELAXED);
	c->param_ack = seq;
	aqm_store_release(&ctrl->param_ack, seq);
}

void
aqm_counters_get(const struct aqm_core *c, struct aqm_counters *out)
{

	*out = c->cnt;
}

void
aqm_counters_publish(struct aqm_core *c, uint64_t now_ns)
{
	struct aqm_chan_ctrl *ctrl;
	uint32_t gen;

	if (!c->chan_attached)
		return;
	ctrl = c->chan.ctrl;
	gen = c->counters_gen + 1;		/* odd: writing */
	__atomic_store_n(&ctrl->counters_gen, gen, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	ctrl->counters = c->cnt;
	ctrl->current = c->params;
	ctrl->now_ns = now_ns;
	ctrl->prob_base = c->prob;
	c->counters_gen = gen + 1;
	aqm_store_release(&ctrl->counters_gen, gen + 1);
}

void
aqm_tick(struct aqm_core *c, uint64_t now_ns)
{
	uint32_t i;

	pi_catch_up(c, now_ns);
	for (i = 0; i < AQM_TICK_BURSTS && c->chan_attached; i++)
		if (drain_verdicts(c) <= (int64_t)AQM_VERDICT_BURST)
			break;
	if (!c->chan_attached)
		return;
	serve_mailbox(c);
	aqm_counters_publish(c, now_ns);
}

/*
 * A data path attached to this region before (producer_gen was not 0):
 * continue above the last sequence number the region shows as published,
 * so that verdicts in flight for that instance can never match one of our
 * packets (they count as late).  The region is untrusted: the value
 * is taken up to AQM_SEQ_RESUME_MAX.
 */
static void
resume_seq(struct aqm_core *c)
{
	struct aqm_chan *ch = &c->chan;
	uint64_t last;

	if (ch->state_prod == 0)
		return;
	last = *(volatile const uint64_t *)
	    &ch->states[(ch->state_prod - 1) & ch->state_mask].seq;
	if (last > AQM_SEQ_RESUME_MAX)
		last = AQM_SEQ_RESUME_MAX;
	if (last >= c->next_seq)
		c->next_seq = last + 1;
}

int
aqm_attach(struct aqm_core *c, void *region, uint64_t size, uint64_t now_ns)
{
	uint32_t gen;
	int rc;

	if (c->chan_attached)
		aqm_detach(c);
	rc = aqm_chan_open(&c->chan, region, size);
	if (rc != AQM_CHAN_OK)
		return (rc);
	/* Consumers see that a new data path instance owns the region. */
	gen = __atomic_fetch_add(&c->chan.hdr->producer_gen, 1,
	    __ATOMIC_ACQ_REL);
	/*
	 * A request posted and not answered before we came is served at the
	 * next tick like any other, with its own result: never answered with
	 * what an earlier request got.
	 */
	c->param_ack = aqm_load_acquire(&c->chan.ctrl->param_ack);
	if (gen != 0)
		resume_seq(c);
	c->counters_gen = aqm_load_acquire(&c->chan.ctrl->counters_gen) & ~1u;
	c->chan_attached = 1;
	__atomic_fetch_or(&c->chan.hdr->flags, AQM_CHAN_F_PRODUCER_UP,
	    __ATOMIC_RELEASE);
	aqm_counters_publish(c, now_ns);
	return (AQM_OK);
}

void
aqm_detach(struct aqm_core *c)
{

	if (!c->chan_attached)
		return;
	__atomic_fetch_and(&c->chan.hdr->flags, ~AQM_CHAN_F_PRODUCER_UP,
	    __ATOMIC_RELEASE);
	c->chan_attached = 0;
}

#define ABI_SIZE(t)		{ "sizeof." #t, sizeof(struct t) }
#define ABI_OFF(t, f)		{ #t "." #f, __builtin_offsetof(struct t, f) }

static const struct aqm_abi_entry abi_table[] = {
	{ "abi_version", AQM_CHAN_ABI_VERSION },
	{ "magic", AQM_CHAN_MAGIC },
	{ "idx_off", AQM_CHAN_IDX_OFF },
	{ "ctrl_off", AQM_CHAN_CTRL_OFF },
	{ "rings_off", AQM_CHAN_RINGS_OFF },
	ABI_SIZE(aqm_params),
	ABI_SIZE(aqm_state_rec),
	ABI_SIZE(aqm_verdict_rec),
	ABI_SIZE(aqm_counters),
	ABI_SIZE(aqm_chan_hdr),
	ABI_SIZE(aqm_chan_ctrl),
	ABI_SIZE(aqm_pkt),
	ABI_OFF(aqm_state_rec, seq),
	ABI_OFF(aqm_state_rec, ts_ns),
	ABI_OFF(aqm_state_rec, deadline_ns),
	ABI_OFF(aqm_state_rec, rate_bps),
	ABI_OFF(aqm_state_rec, len),
	ABI_OFF(aqm_state_rec, queue),
	ABI_OFF(aqm_state_rec, ecn),
	ABI_OFF(aqm_state_rec, flags),
	ABI_OFF(aqm_state_rec, backlog_pkts),
	ABI_OFF(aqm_state_rec, backlog_bytes),
	ABI_OFF(aqm_state_rec, sojourn_ns),
	ABI_OFF(aqm_state_rec, prob_base),
	ABI_OFF(aqm_state_rec, prob_c),
	ABI_OFF(aqm_state_rec, prob_cl),
	ABI_OFF(aqm_verdict_rec, seq),
	ABI_OFF(aqm_verdict_rec, action),
	ABI_OFF(aqm_verdict_rec, model_tag),
	ABI_OFF(aqm_chan_hdr, flags),
	ABI_OFF(aqm_chan_hdr, region_size),
	ABI_OFF(aqm_chan_hdr, producer_gen),
	ABI_OFF(aqm_chan_hdr, consumer_gen),
	ABI_OFF(aqm_params, verdict_guard),
	ABI_OFF(aqm_params, step_thresh_pkts),
	ABI_OFF(aqm_params, min_qlen_step),
	ABI_OFF(aqm_params, harm_budget_pct),
	ABI_OFF(aqm_params, reserved0),
	ABI_OFF(aqm_counters, pi_updates),
	ABI_OFF(aqm_counters, verdicts_capped),
	ABI_OFF(aqm_counters, states_slot_busy),
	ABI_OFF(aqm_chan_ctrl, param_req),
	ABI_OFF(aqm_chan_ctrl, param_ack),
	ABI_OFF(aqm_chan_ctrl, param_result),
	ABI_OFF(aqm_chan_ctrl, counters_gen),
	ABI_OFF(aqm_chan_ctrl, params),
	ABI_OFF(aqm_chan_ctrl, current),
	ABI_OFF(aqm_chan_ctrl, now_ns),
	ABI_OFF(aqm_chan_ctrl, prob_base),
	ABI_OFF(aqm_chan_ctrl, counters),
};

uint32_t
aqm_abi_describe(struct aqm_abi_entry *out, uint32_t max)
{
	uint32_t i, n = sizeof(abi_table) / sizeof(abi_table[0]);

	for (i = 0; i < n && i < max; i++)
		out[i] = abi_table[i];
	return (n);
}
