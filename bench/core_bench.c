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

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = 1;
		else
			npkts = strtoull(argv[i], NULL, 10);
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
