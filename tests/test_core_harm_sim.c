/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * test_core_harm_sim.c: a closed-loop packet simulation of one saturated
 * bottleneck through the real core, with a model of any kind answering
 * every state before its packet can leave.  Used by tests/test_core_harm.py
 * (and for the figures in kmod/core/README.md) to check that no model costs
 * more than the harm budget allows.
 *
 *   test_core_harm_sim POLICY BUDGET_PCT SEED [SECONDS [RATE_MBPS
 *       [NC NL [RTT_MS]]]]
 *
 * POLICY: dualpi2 (no channel), enqueue, drop, mark, random, short-drop (drops
 * every packet while the backlog is under 10 MTU, the worst for utilisation),
 * shipped (signals classic packets with 2 p_C from the state and L packets
 * with the L probability of that coupled: k * sqrt(2 p_C)).  BUDGET_PCT: the
 * harm budget, or "off".
 *
 * Senders: NC classic Reno-like flows (ECT(0) and Not-ECT alternately; one
 * window reduction per RTT on a mark or loss) and NL DCTCP-like L flows
 * (ECT(1)), 4 and 2 by default, RTTs 10 ms + 14 ms per flow index (all
 * RTT_MS when given), 1500-byte packets, a sender right behind the
 * bottleneck.  Prints one JSON object.  Not a microbenchmark: floating point
 * lives here, not in the core.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aqm_core.h"

#define MAXFLOWS	16
#define PKT		1500u
#define FIFO		16384u
#define EVQ		8192u
#define RING		4096u

enum { P_DUALPI2, P_ENQUEUE, P_DROP, P_MARK, P_RANDOM, P_SHORT, P_SHIPPED };

struct flow {
	int	 l4s;
	uint8_t	 ecn;
	uint64_t rtt;
	double	 cwnd, ssthresh, alpha;
	uint32_t inflight;
	uint64_t recover_until;		/* one reduction per RTT */
	uint64_t win_end, win_acked, win_marked;
	uint64_t ev_t[EVQ];		/* feedback: time, and 0 ack/1 mark/2 loss */
	uint8_t	 ev_k[EVQ];
	uint32_t ev_h, ev_n;
};

struct hostq {
	struct aqm_pkt	pkt[FIFO];
	uint8_t		flow[FIFO];
	uint32_t	h, n;
};

static struct flow fl[MAXFLOWS];
static int nflows;
static struct hostq hq[2];
static uint64_t rng = 0x243f6a8885a308d3ull;

static double
urand(void)
{

	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((double)(rng >> 11) / 9007199254740992.0);
}

static void
feedback(struct flow *f, uint64_t t, uint8_t kind)
{
	uint32_t last;

	if (f->ev_n == EVQ)
		abort();
	if (f->ev_n != 0) {
		last = (f->ev_h + f->ev_n - 1) % EVQ;
		if (t < f->ev_t[last])
			t = f->ev_t[last];
	}
	f->ev_t[(f->ev_h + f->ev_n) % EVQ] = t;
	f->ev_k[(f->ev_h + f->ev_n) % EVQ] = kind;
	f->ev_n++;
}

static void
on_feedback(struct flow *f, uint64_t t, uint8_t kind)
{
	double frac;

	f->inflight--;
	if (f->l4s && kind != 2) {
		f->win_acked++;
		f->win_marked += kind == 1;
		if (t >= f->win_end) {
			frac = (double)f->win_marked / (double)f->win_acked;
			f->alpha = f->alpha * (1 - 1.0 / 16) + frac / 16;
			if (f->win_marked != 0) {
				f->cwnd *= 1 - f->alpha / 2;
				f->ssthresh = f->cwnd;
			}
			f->win_acked = f->win_marked = 0;
			f->win_end = t + f->rtt;
		}
		if (kind == 0)
			f->cwnd += f->cwnd < f->ssthresh ? 1 : 1 / f->cwnd;
	} else if (kind == 0) {
		f->cwnd += f->cwnd < f->ssthresh ? 1 : 1 / f->cwnd;
	} else if (t >= f->recover_until) {
		f->cwnd /= 2;
		f->ssthresh = f->cwnd;
		f->recover_until = t + f->rtt;
	}
	if (f->cwnd < 2)
		f->cwnd = 2;
	if (f->cwnd > 4000)
		f->cwnd = 4000;
}

static uint32_t
decide(int policy, const struct aqm_state_rec *s)
{
	double pc, pl;

	switch (policy) {
	case P_DROP:
		return (AQM_ACT_DROP);
	case P_MARK:
		return (AQM_ACT_MARK);
	case P_RANDOM:
		return ((uint32_t)(urand() * 3) % 3);
	case P_SHORT:
		return (s->backlog_bytes[0] + s->backlog_bytes[1] < 10 * PKT ?
		    AQM_ACT_DROP : AQM_ACT_ENQUEUE);
	case P_SHIPPED:
		pc = 2.0 * s->prob_c / 4294967296.0;
		pl = 2.0 * sqrt(pc);
		if (urand() < (s->queue == AQM_QUEUE_L ? pl : pc))
			return (AQM_ACT_MARK);
		return (AQM_ACT_ENQUEUE);
	default:
		return (AQM_ACT_ENQUEUE);
	}
}

int
main(int argc, char **argv)
{
	static const char *names[] = { "dualpi2", "enqueue", "drop", "mark",
	    "random", "short-drop", "shipped" };
	static struct aqm_state_rec st[256];
	struct aqm_core *c = malloc(aqm_core_size());
	struct aqm_counters cnt, warm;
	struct aqm_params p;
	struct aqm_chan ch;
	struct aqm_verdict_rec v;
	struct aqm_decision d;
	struct aqm_pkt pkt;
	uint64_t t = 0, t_free = 0, t_end, t_warm, ser, next_tick, signals = 0;
	uint64_t rsize, best;
	double rate_mbps = 20, secs = 40;
	int policy = -1, i, k, s, warmed = 0, nc = 4, nl = 2;
	int64_t n, j;
	void *region;

	if (argc < 4)
		return (2);
	for (i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
		if (strcmp(argv[1], names[i]) == 0)
			policy = i;
	if (policy < 0)
		return (2);
	aqm_params_default(&p);
	p.harm_budget_pct = strcmp(argv[2], "off") == 0 ? AQM_HARM_BUDGET_OFF :
	    (uint32_t)strtoul(argv[2], NULL, 10);
	rng ^= strtoull(argv[3], NULL, 10) * 0x9e3779b97f4a7c15ull;
	if (argc > 4)
		secs = atof(argv[4]);
	if (argc > 5)
		rate_mbps = atof(argv[5]);
	if (argc > 7) {
		nc = atoi(argv[6]);
		nl = atoi(argv[7]);
	}
	nflows = nc + nl;
	if (nc < 0 || nl < 0 || nflows < 1 || nflows > MAXFLOWS)
		return (2);
	if (aqm_core_init(c, &p, strtoull(argv[3], NULL, 10), 0) != AQM_OK)
		return (2);
	rsize = aqm_chan_region_size(RING, RING);
	region = calloc(1, rsize);
	aqm_chan_init(&ch, region, rsize, RING, RING);
	if (policy != P_DUALPI2)
		aqm_attach(c, region, rsize, 0);

	for (i = 0; i < nflows; i++) {
		fl[i].l4s = i >= nc;
		fl[i].ecn = fl[i].l4s ? AQM_ECN_ECT1 :
		    (i & 1) ? AQM_ECN_NOT_ECT : AQM_ECN_ECT0;
		fl[i].rtt = (uint64_t)(10 + 14 * i) * 1000000ull;
		if (argc > 8)
			fl[i].rtt = (uint64_t)(atof(argv[8]) * 1e6);
		fl[i].cwnd = 2;
		fl[i].ssthresh = 1e9;
	}
	ser = (uint64_t)(PKT * 8 * 1e3 / rate_mbps);	/* ns per packet */
	t_end = (uint64_t)(secs * 1e9);
	t_warm = t_end / 5;
	next_tick = 1000000;
	memset(&warm, 0, sizeof(warm));
	for (;;) {
		/* Senders send what their windows allow, at t. */
		for (i = 0; i < nflows; i++) {
			while (fl[i].inflight < (uint32_t)fl[i].cwnd) {
				fl[i].inflight++;
				if (aqm_enqueue(c, t, PKT, fl[i].ecn, &pkt) ==
				    AQM_V_DROP) {
					feedback(&fl[i], t + fl[i].rtt, 2);
					continue;
				}
				k = pkt.queue;
				hq[k].pkt[(hq[k].h + hq[k].n) % FIFO] = pkt;
				hq[k].flow[(hq[k].h + hq[k].n) % FIFO] =
				    (uint8_t)i;
				hq[k].n++;
			}
		}
		/* The model answers every state before its packet leaves. */
		while (policy != P_DUALPI2 &&
		    (n = aqm_state_pop_batch(&ch, st, 256)) > 0) {
			for (j = 0; j < n; j++) {
				v.seq = st[j].seq;
				v.action = decide(policy, &st[j]);
				v.model_tag = 1;
				signals += v.action != AQM_ACT_ENQUEUE;
				if (aqm_verdict_push_batch(&ch, &v, 1) != 1)
					abort();
			}
			while (aqm_collect_verdicts(c) >
			    (int64_t)AQM_VERDICT_BURST)
				;
		}
		/* Next event: the link free with a backlog, or feedback. */
		best = UINT64_MAX;
		if (hq[0].n + hq[1].n != 0)
			best = t_free > t ? t_free : t;
		k = -1;
		for (i = 0; i < nflows; i++)
			if (fl[i].ev_n != 0 && fl[i].ev_t[fl[i].ev_h] < best) {
				best = fl[i].ev_t[fl[i].ev_h];
				k = i;
			}
		if (best == UINT64_MAX || best > t_end)
			break;
		t = best;
		if (!warmed && t >= t_warm) {
			aqm_counters_get(c, &warm);
			warmed = 1;
		}
		if (t >= next_tick) {
			aqm_tick(c, t);
			next_tick = t + 1000000;
		}
		if (k >= 0) {
			on_feedback(&fl[k], t, fl[k].ev_k[fl[k].ev_h]);
			fl[k].ev_h = (fl[k].ev_h + 1) % EVQ;
			fl[k].ev_n--;
			continue;
		}
		while ((s = aqm_select(c, t)) != AQM_SELECT_NONE) {
			pkt = hq[s].pkt[hq[s].h];
			i = hq[s].flow[hq[s].h];
			hq[s].h = (hq[s].h + 1) % FIFO;
			hq[s].n--;
			aqm_dequeue(c, t, &pkt, hq[s].n ?
			    hq[s].pkt[hq[s].h].ts_ns : 0, &d);
			if (d.verdict == AQM_V_DROP) {
				feedback(&fl[i], t + fl[i].rtt, 2);
				continue;
			}
			feedback(&fl[i], t + ser + fl[i].rtt,
			    d.verdict == AQM_V_MARK ? 1 : 0);
			t_free = t + ser;
			break;
		}
	}
	aqm_counters_get(c, &cnt);
	printf("{\"policy\": \"%s\", \"budget\": \"%s\", \"delivered\": %llu, "
	    "\"capacity\": %llu, \"drops\": %llu, \"marks\": %llu, "
	    "\"model_signals\": %llu, \"capped\": [%llu, %llu], "
	    "\"decisions_model\": %llu, \"verdicts_applied\": %llu, "
	    "\"p_prime\": %.5f}\n",
	    names[policy], argv[2],
	    (unsigned long long)(cnt.pkts_out[0] + cnt.pkts_out[1] -
	    warm.pkts_out[0] - warm.pkts_out[1]),
	    (unsigned long long)((t_end - t_warm) / ser),
	    (unsigned long long)(cnt.drops_model[0] + cnt.drops_model[1] +
	    cnt.drops_fallback[0] + cnt.drops_fallback[1] +
	    cnt.drops_limit[0] + cnt.drops_limit[1]),
	    (unsigned long long)(cnt.marks_model[0] + cnt.marks_model[1] +
	    cnt.marks_fallback[0] + cnt.marks_fallback[1]),
	    (unsigned long long)signals,
	    (unsigned long long)cnt.verdicts_capped[0],
	    (unsigned long long)cnt.verdicts_capped[1],
	    (unsigned long long)cnt.decisions_model,
	    (unsigned long long)cnt.verdicts_applied,
	    (double)aqm_prob_base(c) / 4294967296.0);
	free(region);
	free(c);
	return (0);
}
