/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * fuzz_common.h: a tiny host for the fuzz targets: two FIFOs of packet
 * metadata in front of a core, as every real host keeps, plus the
 * invariants every target checks after each step.
 */

#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aqm_core.h"

#define FQ_CAP	128

struct fuzz_host {
	struct aqm_core	*core;
	struct aqm_pkt	 q[2][FQ_CAP];
	uint32_t	 head[2], len[2];
	uint64_t	 now;
	uint64_t	 dequeued;
};

#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond,	\
		    __FILE__, __LINE__);					\
		abort();						\
	}								\
} while (0)

/* Input reader: missing bytes read as zero. */
struct fuzz_in {
	const uint8_t	*p;
	size_t		 n;
};

static inline uint64_t
fuzz_take(struct fuzz_in *in, unsigned bytes)
{
	uint64_t v = 0;
	unsigned i;

	for (i = 0; i < bytes; i++) {
		if (in->n == 0)
			break;
		v |= (uint64_t)in->p[0] << (8 * i);
		in->p++;
		in->n--;
	}
	return (v);
}

static inline void
fuzz_host_enqueue(struct fuzz_host *h, uint32_t len, uint8_t ecn)
{
	struct aqm_pkt pkt;
	unsigned q;

	if (h->len[0] + h->len[1] >= FQ_CAP - 1)
		return;
	if (aqm_enqueue(h->core, h->now, len, ecn, &pkt) == AQM_V_DROP)
		return;
	q = pkt.queue;
	FUZZ_CHECK(q < 2);
	FUZZ_CHECK(q == ((ecn & 3) == AQM_ECN_ECT1 || (ecn & 3) == AQM_ECN_CE));
	h->q[q][(h->head[q] + h->len[q]) % FQ_CAP] = pkt;
	h->len[q]++;
}

static inline void
fuzz_host_dequeue(struct fuzz_host *h)
{
	struct aqm_decision d;
	struct aqm_pkt pkt;
	uint64_t next;
	int q;

	q = aqm_select(h->core, h->now);
	if (q == AQM_SELECT_NONE) {
		FUZZ_CHECK(h->len[0] + h->len[1] == 0);
		return;
	}
	FUZZ_CHECK(q == 0 || q == 1);
	FUZZ_CHECK(h->len[q] != 0);
	pkt = h->q[q][h->head[q]];
	h->head[q] = (h->head[q] + 1) % FQ_CAP;
	h->len[q]--;
	next = h->len[q] ? h->q[q][h->head[q]].ts_ns : 0;
	d.verdict = 99;
	d.source = 99;
	aqm_dequeue(h->core, h->now, &pkt, next, &d);
	FUZZ_CHECK(d.verdict <= AQM_V_MARK);
	FUZZ_CHECK(d.source <= AQM_SRC_MODEL);
	/* Not-ECT packets are never marked, whoever decides. */
	FUZZ_CHECK(!(d.verdict == AQM_V_MARK && pkt.ecn == AQM_ECN_NOT_ECT));
	h->dequeued++;
}

static inline void
fuzz_host_check(const struct fuzz_host *h)
{
	struct aqm_counters c;
	unsigned q;

	aqm_counters_get(h->core, &c);
	FUZZ_CHECK(c.decisions_model + c.decisions_fallback == h->dequeued);
	/* The verdict guard turns some applied verdicts into DualPI2's decisions. */
	FUZZ_CHECK(c.decisions_model <= c.verdicts_applied);
	FUZZ_CHECK(h->core->qlen[0] == h->len[0]);
	FUZZ_CHECK(h->core->qlen[1] == h->len[1]);
	FUZZ_CHECK(c.channel_errors == 0 || !h->core->chan_attached);
	FUZZ_CHECK(h->core->prob <= AQM_PROB_ONE);
	/* A refused verdict was one in hand. */
	FUZZ_CHECK(c.verdicts_capped[0] + c.verdicts_capped[1] <=
	    c.verdicts_applied);
	for (q = 0; q < 2; q++) {
		/* Verdict slots belong to queued packets only. */
		FUZZ_CHECK(h->core->vq[q].tail - h->core->vq[q].head <=
		    h->core->qlen[q]);
		FUZZ_CHECK(h->core->harm_credit[q] <=
		    (uint64_t)AQM_HARM_CREDIT_MAX << 32);
	}
}

#endif /* !FUZZ_COMMON_H */
