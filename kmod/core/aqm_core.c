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
/* Service-rate estimator: sample window and floor. */
#define RATE_WINDOW_NS		1000000ull
#define RATE_MIN_BPS		1000ull

#define AQM_SEQ_NONE		UINT64_MAX

/* Verdict slot states. */
#define AQM_VS_EMPTY		0u
#define AQM_VS_WAITING		1u	/* state published, no verdict yet */
#define AQM_VS_VERDICT		2u	/* verdict arrived, packet queued */
#define AQM_VS_DONE		3u	/* packet left */

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
	if (p->harm_budget_pct > AQM_HARM_BUDGET_MAX || p->reserved0 != 0)
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
pi_catch_up(struct aqm_core *c, uint64_t now_ns)
{
	int i;

	for (i = 0; i < PI_CATCHUP_MAX && now_ns >= c->next_update_ns; i++) {
		pi_update(c, now_ns);
		c->next_update_ns += c->params.tupdate_ns;
	}
	if (now_ns >= c->next_update_ns)
		c->next_update_ns = now_ns + c->params.tupdate_ns;
}

static void
channel_failed(struct aqm_core *c)
{

	c->cnt.channel_errors++;
	aqm_detach(c);
}

/*
 * Publish the state of a packet just enqueued.  The deadline estimates when
 * it will be dequeued: the bytes ahead of it at the current service rate
 * (an L packet waits for its own queue, a classic one for both).
 */
static void
publish_state(struct aqm_core *c, uint64_t now_ns, const struct aqm_pkt *pkt,
    uint32_t ahead_bytes, int first)
{
	struct aqm_state_rec r;
	int rc;

	r.seq = pkt->seq;
	r.ts_ns = now_ns;
	r.deadline_ns = now_ns +
	    (((uint64_t)ahead_bytes * c->ns_per_kbyte) >> 10);
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
	if (rc == 1)
		c->cnt.states_published++;
	else if (rc == 0)
		c->cnt.states_lost++;
	else
		channel_failed(c);
}

int
aqm_enqueue(struct aqm_core *c, uint64_t now_ns, uint32_t len, uint8_t ecn,
    struct aqm_pkt *pkt)
{
	struct aqm_vslot *s;
	uint32_t ahead;
	unsigned q;
	int first;

	ecn &= 3;
	q = (ecn == AQM_ECN_ECT1 || ecn == AQM_ECN_CE) ? AQM_QUEUE_L :
	    AQM_QUEUE_C;
	pkt->ts_ns = now_ns;
	pkt->len = len;
	pkt->queue = (uint8_t)q;
	pkt->ecn = ecn;
	pkt->pad = 0;
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
	ahead = q == AQM_QUEUE_L ? c->qbytes[q] : c->qbytes[0] + c->qbytes[1];
	first = c->qlen[q] == 0;
	if (first)
		c->head_ts[q] = now_ns;
	c->qlen[q]++;
	c->qbytes[q] += len;
	c->cnt.pkts_in[q]++;
	c->cnt.bytes_in[q] += len;

	if (c->chan_attached) {
		s = &c->vslot[pkt->seq & VSLOT_MASK];
		s->seq = pkt->seq;
		s->state = AQM_VS_WAITING;
		s->action = AQM_ACT_ENQUEUE;
		publish_state(c, now_ns, pkt, ahead, first);
	}
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
	struct aqm_vslot *s;

	if (action >= AQM_NACTIONS || seq >= c->next_seq) {
		c->cnt.verdicts_bad++;
		return;
	}
	s = &c->vslot[seq & VSLOT_MASK];
	if (s->seq == seq && s->state == AQM_VS_WAITING) {
		s->state = AQM_VS_VERDICT;
		s->action = action;
	} else if (s->seq == seq && s->state == AQM_VS_VERDICT) {
		c->cnt.verdicts_bad++;		/* a second verdict */
	} else if (s->seq == seq || seq < s->seq) {
		c->cnt.verdicts_late++;		/* left, or slot reused */
	} else {
		c->cnt.verdicts_bad++;		/* never published */
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

/* Service rate over busy periods: bytes of the previous packet per gap. */
static void
rate_update(struct aqm_core *c, uint64_t now_ns, uint32_t len, int busy)
{
	uint64_t sample;

	if (c->last_deq_busy && now_ns > c->last_deq_ns) {
		c->rate_bytes += c->last_deq_len;
		c->rate_ns += now_ns - c->last_deq_ns;
		if (c->rate_ns >= RATE_WINDOW_NS) {
			sample = c->rate_bytes * NSEC_PER_SEC / c->rate_ns;
			c->rate_bps = c->rate_bps == 0 ? sample :
			    (c->rate_bps * 7 + sample) / 8;
			c->ns_per_kbyte = 1024ull * NSEC_PER_SEC /
			    (c->rate_bps > RATE_MIN_BPS ? c->rate_bps :
			    RATE_MIN_BPS);
			c->rate_bytes = 0;
			c->rate_ns = 0;
		}
	}
	c->last_deq_ns = now_ns;
	c->last_deq_len = len;
	c->last_deq_busy = busy;
}

/*
 * The native L4S step: an L packet that waited the threshold is marked.
 * *stepped says the step made a mark; the caller counts it once final.
 */
static uint32_t
step_decide(const struct aqm_core *c, uint64_t now_ns,
    const struct aqm_pkt *pkt, int *stepped)
{

	if (pkt->queue != AQM_QUEUE_L || now_ns < pkt->ts_ns ||
	    now_ns - pkt->ts_ns < c->params.step_thresh_ns)
		return (AQM_V_PASS);
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
	struct aqm_vslot *s = &c->vslot[pkt->seq & VSLOT_MASK];
	unsigned q = pkt->queue & 1, other = q ^ 1;
	uint32_t guard;
	int other_busy, stepped = 0;

	dequeue_accounting(c, pkt, next_head_ts);
	pi_catch_up(c, now_ns);
	rate_update(c, now_ns, pkt->len, c->qlen[0] + c->qlen[1] != 0);
	/*
	 * Look at the verdict ring only while this packet's verdict is
	 * missing: its index sits on a line the daemon writes, and a daemon
	 * that is ahead has filed the verdicts of many packets at one look.
	 */
	if (c->chan_attached && s->seq == pkt->seq && s->state == AQM_VS_WAITING)
		drain_verdicts(c);

	if (c->chan_attached && s->seq == pkt->seq &&
	    s->state == AQM_VS_VERDICT && c->verdict_delay_ns != 0 &&
	    now_ns - pkt->ts_ns < c->verdict_delay_ns) {
		/* In the emulated world this verdict came after the packet left. */
		s->state = AQM_VS_DONE;
		c->cnt.verdicts_late++;
	}
	if (c->chan_attached && s->seq == pkt->seq &&
	    s->state == AQM_VS_VERDICT &&
	    !(c->chan.hdr->flags & AQM_CHAN_F_PAUSED)) {
		d->source = AQM_SRC_MODEL;
		switch (s->action) {
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
		guard = d->verdict == AQM_V_DROP ? AQM_V_PASS :
		    guard_decide(c, now_ns, pkt, &stepped);
		if (verdict_rank(guard) > verdict_rank(d->verdict)) {
			d->source = AQM_SRC_FALLBACK;
			d->verdict = guard;
		}
	} else {
		d->source = AQM_SRC_FALLBACK;
		d->verdict = dualpi2_decide(c, now_ns, pkt, &stepped);
	}
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
	if (s->seq == pkt->seq)
		s->state = AQM_VS_DONE;

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
	const struct aqm_vslot *s = &c->vslot[seq & VSLOT_MASK];

	return (s->seq == seq && s->state == AQM_VS_VERDICT);
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
	struct aqm_vslot *s = &c->vslot[pkt->seq & VSLOT_MASK];

	dequeue_accounting(c, pkt, next_head_ts);
	if (s->seq == pkt->seq)
		s->state = AQM_VS_DONE;
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

int
aqm_attach(struct aqm_core *c, void *region, uint64_t size, uint64_t now_ns)
{
	int rc;

	if (c->chan_attached)
		aqm_detach(c);
	rc = aqm_chan_open(&c->chan, region, size);
	if (rc != AQM_CHAN_OK)
		return (rc);
	/* Consumers see that a new data path instance owns the region. */
	__atomic_fetch_add(&c->chan.hdr->producer_gen, 1, __ATOMIC_RELEASE);
	/* Requests made before we came are not ours to answer. */
	c->param_ack = aqm_load_acquire(&c->chan.ctrl->param_req);
	aqm_store_release(&c->chan.ctrl->param_ack, c->param_ack);
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
