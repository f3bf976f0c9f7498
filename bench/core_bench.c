/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * core_bench: nanoseconds per packet through the core, alone and with the
 * channel attached and a verdict consumer running on the other core.
 *
 * Each packet is one enqueue, one select and one dequeue, with about
 * BACKLOG packets queued (both queues busy, every ECN codepoint), as a
 * loaded bottleneck would see them.  The consumer takes states in batches
 * by size and age, as aqmllmd does, and answers every one with a verdict,
 * so the attached figure includes publishing, verdict filing and lookup.  Not a test: numbers go to
 * bench/README.md.
 *
 * With --deadlines it measures instead, in simulated time, how many classic
 * packets a daemon of a given latency gets a verdict to in time when it
 * skips states whose published deadline has passed (as aqmllmd does): a
 * 10 Gbit/s link, open-loop Poisson L and classic loads (see deadlines()).
 */

#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aqm_core.h"

#define BACKLOG		256u
#define FIFO_CAP	1024u
#define REPS		5
#define RING		65536u
#define BATCH		64u		/* consumer: batch size ... */
#define MAX_WAIT_NS	20000u		/* ... or age */
#ifndef POLL_NS
#define POLL_NS		10000u		/* between looks at the ring */
#endif

struct fifo {
	struct aqm_pkt slot[FIFO_CAP];
	uint32_t head, len;
};

struct consumer {
	struct aqm_chan	 ch;
	volatile int	 stop;
	uint64_t	 answered;
};

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

static void
pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *
consume(void *arg)
{
	struct consumer *c = arg;
	static struct aqm_state_rec s[256];
	static struct aqm_verdict_rec v[256];
	int64_t n, i, done;

	uint64_t first_seen = 0, t;
	uint32_t prod;

	pin(1);
	while (!c->stop) {
		/*
		 * Batch as aqmllmd does, by size and by age: take the records
		 * once BATCH are waiting or the oldest waited MAX_WAIT_NS.
		 */
		prod = aqm_load_acquire(&c->ch.idx[AQM_IDX_STATE_PROD].value);
		if (prod - c->ch.state_cons < BATCH) {
			t = now_ns();
			if (prod == c->ch.state_cons)
				first_seen = 0;
			else if (first_seen == 0)
				first_seen = t;
			if (first_seen == 0 || t - first_seen < MAX_WAIT_NS) {
				/*
				 * Look again after POLL_NS without touching the
				 * ring: polling the producer's index in a tight
				 * loop would pull its cache line away from the
				 * data path at every packet.
				 */
				while (now_ns() - t < POLL_NS)
					__builtin_ia32_pause();
				continue;
			}
		}
		first_seen = 0;
		n = aqm_state_pop_batch(&c->ch, s, 256);
		if (n <= 0)
			continue;
		for (i = 0; i < n; i++) {
			v[i].seq = s[i].seq;
			v[i].action = AQM_ACT_ENQUEUE;
			v[i].model_tag = 1;
		}
		for (done = 0; done < n && !c->stop;)
			done += aqm_verdict_push_batch(&c->ch, v + done,
			    (uint32_t)(n - done));
		c->answered += (uint64_t)n;
	}
	return (NULL);
}

/* Returns ns per packet for npkts packets. */
static double
run(struct aqm_core *core, uint64_t npkts, uint64_t *model)
{
	static struct fifo q[2];
	static const uint8_t ecns[4] = { 1, 2, 0, 3 };
	struct aqm_counters cnt;
	struct aqm_decision d;
	struct aqm_pkt p;
	uint64_t i, t0, t1, t;
	int s;

	memset(q, 0, sizeof(q));
	t = 1000000000ull;
	for (i = 0; i < BACKLOG; i++) {
		if (aqm_enqueue(core, t, 1000, ecns[i & 3], &p) == AQM_V_PASS) {
			q[p.queue].slot[(q[p.queue].head + q[p.queue].len) %
			    FIFO_CAP] = p;
			q[p.queue].len++;
		}
	}
	t0 = now_ns();
	for (i = 0; i < npkts; i++) {
		t += 800;	/* 10 Gbit/s of 1000-byte packets */
		if (aqm_enqueue(core, t, 200 + (uint32_t)(i & 1023),
		    ecns[i & 3], &p) == AQM_V_PASS &&
		    q[p.queue].len < FIFO_CAP) {
			q[p.queue].slot[(q[p.queue].head + q[p.queue].len) %
			    FIFO_CAP] = p;
			q[p.queue].len++;
		}
		s = aqm_select(core, t);
		if (s == AQM_SELECT_NONE)
			continue;
		p = q[s].slot[q[s].head];
		q[s].head = (q[s].head + 1) % FIFO_CAP;
		q[s].len--;
		aqm_dequeue(core, t, &p, q[s].len ?
		    q[s].slot[q[s].head].ts_ns : 0, &d);
	}
	t1 = now_ns();
	aqm_counters_get(core, &cnt);
	*model = cnt.decisions_model;
	return ((double)(t1 - t0) / (double)npkts);
}

/* -- --deadlines ------------------------------------------------------ */

#define DL_FIFO		16384u
#define DL_RING		65536u
#define DL_LINK_BPS	1250000000ull	/* 10 Gbit/s */
#define DL_LEN		1500u

struct dl_fifo {
	struct aqm_pkt	slot[DL_FIFO];
	uint32_t	head, len;
};

struct dl_pending {
	uint64_t seq, ts, deadline;
	uint8_t	 queue;
};

struct dl_result {
	uint64_t classic, answerable, on_time, skipped_queued;
	uint64_t expired_at_publish, first_expired, first_n;
	double	 wait_sum, est_sum;
};

static uint64_t dl_rng = 88172645463325252ull;

/* ln(x) for 0 < x <= 1 without libm: halvings, then the atanh series. */
static double
dl_ln(double x)
{
	double y, y2, term, sum = 0;
	int k = 0, n;

	while (x < 0.5) {
		x *= 2;
		k--;
	}
	y = (x - 1) / (x + 1);
	y2 = y * y;
	term = y;
	for (n = 1; n < 40; n += 2) {
		sum += term / n;
		term *= y2;
	}
	return (2 * sum + k * 0.69314718055994530942);
}

static double
dl_exp(double mean_ns)
{
	double u;

	dl_rng ^= dl_rng << 13;
	dl_rng ^= dl_rng >> 7;
	dl_rng ^= dl_rng << 17;
	u = ((double)(dl_rng >> 11) + 0.5) / 9007199254740992.0;
	return (-dl_ln(u) * mean_ns);
}

/*
 * One run: Poisson arrivals of 1500-byte packets at load_l and load_c of
 * the link for dur_ns; a daemon that sees each state delay_ns after its
 * enqueue, skips it when its deadline has passed by then, and otherwise
 * answers at once (verdict "enqueue", verdict guard none, so that a
 * classic packet decided by the model is exactly one whose verdict was
 * there in time).
 */
static void
dl_run(double load_l, double load_c, uint64_t delay_ns, uint64_t dur_ns,
    struct dl_result *res)
{
	static struct dl_fifo q[2];
	static struct aqm_state_rec st[256];
	static struct dl_pending pend[DL_RING];
	static uint64_t deadline_of[1u << 22], ts_of[1u << 22];
	struct aqm_core *core = malloc(aqm_core_size());
	struct aqm_chan ch;
	struct aqm_params p;
	struct aqm_decision d;
	struct aqm_verdict_rec v;
	struct aqm_pkt pkt;
	uint64_t rsize, t, t_arr[2], t_free, next_tick, ser, wait, est;
	uint32_t ph = 0, pt = 0, mask = (1u << 22) - 1;
	double mean[2];
	void *region;
	int64_t n, i;
	int s, k;

	memset(res, 0, sizeof(*res));
	memset(q, 0, sizeof(q));
	rsize = aqm_chan_region_size(DL_RING, DL_RING);
	region = aligned_alloc(4096, rsize);
	memset(region, 0, rsize);
	aqm_chan_init(&ch, region, rsize, DL_RING, DL_RING);
	aqm_params_default(&p);
	p.verdict_guard = AQM_GUARD_NONE;
	aqm_core_init(core, &p, 1, 0);
	aqm_attach(core, region, rsize, 0);
	ser = (uint64_t)DL_LEN * 1000000000ull / DL_LINK_BPS;
	mean[AQM_QUEUE_L] = (double)ser / load_l;
	mean[AQM_QUEUE_C] = (double)ser / load_c;
	t_arr[0] = (uint64_t)dl_exp(mean[0]);
	t_arr[1] = (uint64_t)dl_exp(mean[1]);
	t_free = 0;
	next_tick = 100000;
	for (;;) {
		/* Next event: an arrival, or the link free with a backlog. */
		k = t_arr[0] <= t_arr[1] ? 0 : 1;
		t = t_arr[k];
		if (q[0].len + q[1].len != 0 && t_free <= t)
			t = t_free, k = -1;
		if (t > dur_ns)
			break;
		if (t >= next_tick) {
			aqm_tick(core, t);
			next_tick = t + 100000;
		}
		if (k >= 0) {
			/* An idle link starts sending at the arrival. */
			if (t_free < t)
				t_free = t;
			/* ECT(1) to L, ECT(0) to C. */
			if (aqm_enqueue(core, t, DL_LEN, k == AQM_QUEUE_L ?
			    AQM_ECN_ECT1 : AQM_ECN_ECT0, &pkt) == AQM_V_PASS &&
			    q[pkt.queue].len < DL_FIFO) {
				q[pkt.queue].slot[(q[pkt.queue].head +
				    q[pkt.queue].len) % DL_FIFO] = pkt;
				q[pkt.queue].len++;
			}
			t_arr[k] = t + 1 + (uint64_t)dl_exp(mean[k]);
		} else {
			while ((s = aqm_select(core, t)) != AQM_SELECT_NONE) {
				pkt = q[s].slot[q[s].head];
				q[s].head = (q[s].head + 1) % DL_FIFO;
				q[s].len--;
				aqm_dequeue(core, t, &pkt, q[s].len ?
				    q[s].slot[q[s].head].ts_ns : 0, &d);
				if (s == AQM_QUEUE_C &&
				    ts_of[pkt.seq & mask] == pkt.ts_ns + 1) {
					wait = t - pkt.ts_ns;
					est = deadline_of[pkt.seq & mask] -
					    pkt.ts_ns;
					res->classic++;
					if (wait >= delay_ns) {
						res->answerable++;
						if (d.source == AQM_SRC_MODEL)
							res->on_time++;
					}
					res->wait_sum += (double)wait;
					res->est_sum += (double)est;
				}
				if (d.verdict != AQM_V_DROP) {
					t_free = t + ser;
					break;
				}
			}
		}
		/* The daemon: collect new states, answer those now due. */
		n = aqm_state_pop_batch(&ch, st, 256);
		for (i = 0; i < n; i++) {
			pend[pt % DL_RING].seq = st[i].seq;
			pend[pt % DL_RING].ts = st[i].ts_ns;
			pend[pt % DL_RING].deadline = st[i].deadline_ns;
			pend[pt % DL_RING].queue = st[i].queue;
			pt++;
			deadline_of[st[i].seq & mask] = st[i].deadline_ns;
			ts_of[st[i].seq & mask] = st[i].ts_ns + 1;
			if (st[i].queue == AQM_QUEUE_C) {
				if (st[i].deadline_ns <= st[i].ts_ns) {
					res->expired_at_publish++;
					if (st[i].seq < 2000)
						res->first_expired++;
				}
				if (st[i].seq < 2000)
					res->first_n++;
			}
		}
		while (ph != pt && pend[ph % DL_RING].ts + delay_ns <= t) {
			struct dl_pending *e = &pend[ph % DL_RING];

			ph++;
			if (e->deadline < e->ts + delay_ns) {
				/* Skipped: counted if the packet is still queued. */
				if (e->queue == AQM_QUEUE_C && q[0].len != 0 &&
				    q[0].slot[q[0].head].seq <= e->seq)
					res->skipped_queued++;
				continue;
			}
			v.seq = e->seq;
			v.action = AQM_ACT_ENQUEUE;
			v.model_tag = 1;
			(void)aqm_verdict_push_batch(&ch, &v, 1);
		}
	}
	aqm_detach(core);
	free(region);
	free(core);
}

static int
deadlines(void)
{
	static const double loads[][2] = { { 0.88, 0.12 }, { 0.60, 0.35 } };
	static const uint64_t delays[] = { 200000, 1000000 };
	struct dl_result r;
	unsigned i, j;

	printf("load L/C   daemon  classic  on-time  skipped-queued  "
	    "expired@pub  first-2000-expired  real/estimated wait\n");
	for (i = 0; i < sizeof(loads) / sizeof(loads[0]); i++) {
		for (j = 0; j < sizeof(delays) / sizeof(delays[0]); j++) {
			dl_rng = 88172645463325252ull;
			dl_run(loads[i][0], loads[i][1], delays[j],
			    2000000000ull, &r);
			printf("%.2f/%.2f  %5.1f ms  %7" PRIu64 "  %6.1f%%  "
			    "%14" PRIu64 "  %11" PRIu64 "  %10" PRIu64 "/%" PRIu64
			    "  %19.2f\n", loads[i][0], loads[i][1],
			    (double)delays[j] / 1e6, r.classic,
			    r.answerable ? 100.0 * (double)r.on_time /
			    (double)r.answerable : 0.0, r.skipped_queued,
			    r.expired_at_publish, r.first_expired, r.first_n,
			    r.est_sum > 0 ? r.wait_sum / r.est_sum : 0.0);
		}
	}
	return (0);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x < y ? -1 : x > y);
}

int
main(int argc, char **argv)
{
	struct aqm_core *core = malloc(aqm_core_size());
	struct consumer cons;
	double alone[REPS], attached[REPS], share[REPS];
	uint64_t npkts = 2000000, model, rsize;
	pthread_t th;
	void *region;
	int r, json = 0, i;
	char *end;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--deadlines") == 0)
			return (deadlines());
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
			continue;
		}
		npkts = strtoull(argv[i], &end, 10);
		if (*argv[i] == '\0' || *end != '\0' || npkts == 0) {
			fprintf(stderr, "usage: aqm-core-bench [PACKETS] [--json] | "
			    "--deadlines\n");
			return (strcmp(argv[i], "--help") == 0 ? 0 : 2);
		}
	}
	pin(0);
	rsize = aqm_chan_region_size(RING, RING);
	region = aligned_alloc(4096, rsize);
	for (r = 0; r < REPS; r++) {
		aqm_core_init(core, NULL, 1, 0);
		alone[r] = run(core, npkts, &model);

		memset(region, 0, rsize);
		memset(&cons, 0, sizeof(cons));
		aqm_chan_init(&cons.ch, region, rsize, RING, RING);
		aqm_core_init(core, NULL, 1, 0);
		aqm_attach(core, region, rsize, 0);
		pthread_create(&th, NULL, consume, &cons);
		attached[r] = run(core, npkts, &model);
		cons.stop = 1;
		pthread_join(th, NULL);
		aqm_detach(core);
		share[r] = (double)model / (double)npkts;
	}
	qsort(alone, REPS, sizeof(double), cmp_double);
	qsort(attached, REPS, sizeof(double), cmp_double);
	qsort(share, REPS, sizeof(double), cmp_double);
	if (json)
		printf("{\"packets\": %" PRIu64 ", \"reps\": %d, "
		    "\"ns_per_pkt_alone\": %.2f, \"ns_per_pkt_attached\": %.2f, "
		    "\"ratio\": %.3f, \"model_share\": %.4f}\n", npkts, REPS,
		    alone[REPS / 2], attached[REPS / 2],
		    attached[REPS / 2] / alone[REPS / 2], share[REPS / 2]);
	else
		printf("core alone:        %.1f ns/packet (enqueue+select+"
		    "dequeue, median of %d x %" PRIu64 ")\n"
		    "channel attached:  %.1f ns/packet, %.1f%% of packets "
		    "decided by a verdict\nratio:             %.3f\n",
		    alone[REPS / 2], REPS, npkts, attached[REPS / 2],
		    100 * share[REPS / 2], attached[REPS / 2] / alone[REPS / 2]);
	free(region);
	free(core);
	return (0);
}
