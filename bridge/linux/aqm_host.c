/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm-host: the AQM-LLM data path on Linux, in user space.
 *
 * The same core as the FreeBSD module drives a bottleneck link emulated in
 * real time on CLOCK_MONOTONIC, with its channel region in a POSIX
 * shared-memory object (mode 0600) so that aqmllmd runs as a separate
 * process exactly as it does against /dev/aqm_llm.  The load is one of:
 * synthetic responsive flows (scalable ones that react to each mark, as
 * DCTCP does, and classic ones that halve once per round trip, as Reno
 * does); with --load, open-loop synthetic arrivals (Poisson or on/off, a
 * given share of ECT(1), ECT(0) and Not-ECT packets, offered at a fraction
 * of the link rate); a packet trace; or, with --stress, packets as fast as
 * possible.
 *
 * The host never waits for the daemon: a verdict that is not there when a
 * packet leaves is DualPI2's to give.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AQM_PROG	"aqm-host"
#include "aqm_core.h"
#include "aqm_lregion.h"
#include "aqm_lutil.h"

#define MAX_FLOWS	64
#define ACKQ_SIZE	16384		/* per flow, > any window we allow */
#define MAX_CWND	8000.0
/*
 * Sojourn histogram: exact below 2^HIST_SUB_BITS ns, then 2^HIST_SUB_BITS
 * buckets per power of two (at most 1/128 relative width) up to 2^64 ns.
 */
#define HIST_SUB_BITS	7
#define HIST_SUB	(1u << HIST_SUB_BITS)
#define HIST_BUCKETS	((64 - HIST_SUB_BITS + 1) * HIST_SUB)
#define TICK_NS		1000000ull
#define SPIN_NS		20000ull

enum flow_kind { FLOW_L4S, FLOW_CLASSIC_ECN, FLOW_CLASSIC };

/* The open-loop generator (--load). */
struct openloop {
	double	 load;			/* offered / link rate */
	int	 onoff;			/* 0 Poisson, 1 on/off */
	double	 on_ns, off_ns;		/* mean period lengths (on/off) */
	double	 share[3];		/* ECT(1), ECT(0), Not-ECT; sum 1 */
	uint32_t pkt_len;
};

struct ack {
	uint64_t at_ns;
	uint8_t	 ce;
	uint8_t	 lost;
};

struct flow {
	enum flow_kind kind;
	uint64_t rtt_ns;
	double	 cwnd;
	double	 ssthresh;
	uint32_t inflight;
	uint64_t no_cut_until;		/* classic: one cut per round trip */
	uint64_t delivered_bytes;
	struct ack ackq[ACKQ_SIZE];
	uint32_t ack_head, ack_tail;
};

struct hpkt {
	struct aqm_pkt meta;
	uint16_t flow;
};

struct fifo {
	struct hpkt *slot;
	uint32_t cap, head, len;
};

struct samples {
	uint64_t *count;		/* HIST_BUCKETS */
	uint64_t n;
};

struct host {
	struct aqm_core *core;
	struct aqm_lregion reg;		/* the region (aqm_lregion.h) */
	char	 shm_name[128];		/* --keep-shm: /NAME */
	struct fifo q[AQM_NQUEUES];
	struct flow *flows;
	int	 nflows;
	double	 rate_bps;		/* link, bits/s */
	uint64_t link_free_ns;
	uint64_t bytes_sent;
	uint64_t bytes_offered;		/* accepted or not */
	struct samples soj[AQM_NQUEUES];
	uint64_t rng;
	FILE	*stress_log;
};

static void
sleep_until(uint64_t t)
{
	struct timespec ts;
	uint64_t now = mono_ns();

	if (t <= now)
		return;
	if (t - now < SPIN_NS) {
		while (mono_ns() < t)
			;
		return;
	}
	t -= SPIN_NS / 2;
	ts.tv_sec = (time_t)(t / 1000000000ull);
	ts.tv_nsec = (long)(t % 1000000000ull);
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static double
uniform(struct host *h)
{
	uint64_t x = h->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	h->rng = x;
	return ((double)((x * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0);
}

/* -- the two FIFOs a host keeps ------------------------------------------ */

static int
fifo_push(struct fifo *f, const struct hpkt *p)
{

	if (f->len == f->cap)
		return (-1);
	f->slot[(f->head + f->len) % f->cap] = *p;
	f->len++;
	return (0);
}

static struct hpkt
fifo_pop(struct fifo *f)
{
	struct hpkt p = f->slot[f->head];

	f->head = (f->head + 1) % f->cap;
	f->len--;
	return (p);
}

static uint64_t
fifo_head_ts(const struct fifo *f)
{

	return (f->len != 0 ? f->slot[f->head].meta.ts_ns : 0);
}

static uint32_t
hist_index(uint64_t v)
{
	uint32_t shift;

	if (v < HIST_SUB)
		return ((uint32_t)v);
	shift = (uint32_t)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
	return (HIST_SUB + shift * HIST_SUB + (uint32_t)(v >> shift) - HIST_SUB);
}

/* The middle of bucket i, in ns. */
static double
hist_value(uint32_t i)
{
	uint32_t shift;
	uint64_t lo;

	if (i < HIST_SUB)
		return ((double)i);
	shift = (i - HIST_SUB) / HIST_SUB;
	lo = (uint64_t)(HIST_SUB + (i - HIST_SUB) % HIST_SUB) << shift;
	return ((double)lo + ((double)(1ull << shift) - 1) / 2);
}

static void
sample_add(struct samples *s, uint64_t v)
{

	s->count[hist_index(v)]++;
	s->n++;
}

/* Over every packet of the run, to the histogram's precision (< 0.4 %). */
static double
percentile_ms(const struct samples *s, double pct)
{
	uint64_t rank, cum = 0;
	uint32_t i;

	if (s->n == 0)
		return (0);
	rank = (uint64_t)(pct / 100.0 * (double)(s->n - 1) + 0.5);
	for (i = 0; i < HIST_BUCKETS; i++) {
		cum += s->count[i];
		if (cum > rank)
			return (hist_value(i) / 1e6);
	}
	return (0);
}

/* -- responsive flows ------------------------------------------------------ */

static uint8_t
flow_ecn(const struct flow *f)
{

	switch (f->kind) {
	case FLOW_L4S:
		return (AQM_ECN_ECT1);
	case FLOW_CLASSIC_ECN:
		return (AQM_ECN_ECT0);
	default:
		return (AQM_ECN_NOT_ECT);
	}
}

static void
flow_feedback(struct flow *f, uint64_t at_ns, int ce, int lost)
{
	struct ack *a;

	if (f->ack_tail - f->ack_head >= ACKQ_SIZE)
		return;			/* cannot happen: inflight < ACKQ_SIZE */
	a = &f->ackq[f->ack_tail % ACKQ_SIZE];
	a->at_ns = at_ns;
	a->ce = (uint8_t)ce;
	a->lost = (uint8_t)lost;
	f->ack_tail++;
}

static void
flow_cut(struct flow *f, uint64_t now)
{

	if (now < f->no_cut_until)
		return;
	f->cwnd = fmax(2.0, f->cwnd / 2);
	f->ssthresh = f->cwnd;
	f->no_cut_until = now + f->rtt_ns;
}

/* Congestion control on one acknowledgement (or loss notice). */
static void
flow_on_ack(struct flow *f, const struct ack *a, uint64_t now)
{

	if (f->inflight > 0)
		f->inflight--;
	if (a->lost) {
		flow_cut(f, now);
	} else if (a->ce && f->kind == FLOW_L4S) {
		/* Scalable: a small cut per mark (DCTCP's alpha/2 per window). */
		f->cwnd = fmax(2.0, f->cwnd - 0.5);
		f->ssthresh = f->cwnd;
	} else if (a->ce) {
		flow_cut(f, now);
	} else {
		f->delivered_bytes += 1500;
		f->cwnd += f->cwnd < f->ssthresh ? 1.0 : 1.0 / f->cwnd;
		if (f->cwnd > MAX_CWND)
			f->cwnd = MAX_CWND;
	}
}

static void
process_acks(struct host *h, uint64_t now)
{
	struct flow *f;
	int i;

	for (i = 0; i < h->nflows; i++) {
		f = &h->flows[i];
		while (f->ack_head != f->ack_tail &&
		    f->ackq[f->ack_head % ACKQ_SIZE].at_ns <= now) {
			flow_on_ack(f, &f->ackq[f->ack_head % ACKQ_SIZE], now);
			f->ack_head++;
		}
	}
}

static uint64_t
next_ack_ns(const struct host *h)
{
	uint64_t t = UINT64_MAX;
	int i;

	for (i = 0; i < h->nflows; i++) {
		const struct flow *f = &h->flows[i];

		if (f->ack_head != f->ack_tail &&
		    f->ackq[f->ack_head % ACKQ_SIZE].at_ns < t)
			t = f->ackq[f->ack_head % ACKQ_SIZE].at_ns;
	}
	return (t);
}

/* -- the data path ---------------------------------------------------------- */

/* Offer one packet to the queue; 0 if accepted. */
static int
host_enqueue(struct host *h, uint64_t now, uint32_t len, uint8_t ecn,
    uint16_t flow)
{
	struct hpkt p;

	h->bytes_offered += len;
	if (aqm_enqueue(h->core, now, len, ecn, &p.meta) == AQM_V_DROP)
		return (-1);
	p.flow = flow;
	if (fifo_push(&h->q[p.meta.queue], &p) != 0) {
		/* Limits keep the FIFOs from filling; flush if they ever do. */
		aqm_forget(h->core, &p.meta, fifo_head_ts(&h->q[p.meta.queue]));
		return (-1);
	}
	return (0);
}

/*
 * Serve the link once: select, pop, decide; drops are dealt with and the
 * next packet taken, until one is sent or the queues are empty.
 */
static void
host_transmit(struct host *h, uint64_t now)
{
	struct aqm_decision d;
	struct hpkt p;
	struct flow *f;
	uint64_t tx_ns;
	int q;

	for (;;) {
		q = aqm_select(h->core, now);
		if (q == AQM_SELECT_NONE)
			return;
		p = fifo_pop(&h->q[q]);
		aqm_dequeue(h->core, now, &p.meta, fifo_head_ts(&h->q[q]), &d);
		if (h->stress_log != NULL) {
			/* seq; source | verdict << 8 | sojourn_ns << 16 */
			uint64_t rec[2] = { p.meta.seq,
			    (uint64_t)d.source | (uint64_t)d.verdict << 8 |
			    (now - p.meta.ts_ns) << 16 };

			fwrite(rec, sizeof(rec), 1, h->stress_log);
		}
		f = p.flow < h->nflows ? &h->flows[p.flow] : NULL;
		if (d.verdict == AQM_V_DROP) {
			if (f != NULL)
				flow_feedback(f, now + f->rtt_ns, 0, 1);
			continue;
		}
		sample_add(&h->soj[q], now - p.meta.ts_ns);
		h->bytes_sent += p.meta.len;
		tx_ns = (uint64_t)((double)p.meta.len * 8e9 / h->rate_bps);
		/*
		 * Back to back: a link that was busy starts the next packet when
		 * the last one ended, however late this process woke up.
		 */
		if (h->link_free_ns != 0 && now - h->link_free_ns < tx_ns)
			h->link_free_ns += tx_ns;
		else
			h->link_free_ns = now + tx_ns;
		if (f != NULL)
			flow_feedback(f, now + tx_ns + f->rtt_ns,
			    d.verdict == AQM_V_MARK ||
			    p.meta.ecn == AQM_ECN_CE, 0);
		return;
	}
}

static void
send_what_windows_allow(struct host *h, uint64_t now)
{
	struct flow *f;
	int i;

	for (i = 0; i < h->nflows; i++) {
		f = &h->flows[i];
		while (f->inflight < (uint32_t)f->cwnd &&
		    f->inflight < ACKQ_SIZE - 1) {
			f->inflight++;
			if (host_enqueue(h, now, 1500, flow_ecn(f),
			    (uint16_t)i) != 0)
				flow_feedback(f, now + f->rtt_ns, 0, 1);
		}
	}
}

/* -- modes ------------------------------------------------------------------ */

/*
 * The link and the clock, once per pass of a real-time loop: send when the
 * link is free, tick every TICK_NS; returns when something is next due.
 */
static uint64_t
serve_link(struct host *h, uint64_t now, uint64_t *next_tick)
{
	uint64_t t;

	if (now >= h->link_free_ns)
		host_transmit(h, now);
	if (now >= *next_tick) {
		aqm_tick(h->core, now);
		(void)aqm_lregion_watch(&h->reg, h->core, now, "aqm-host");
		*next_tick += TICK_NS;
	}
	t = *next_tick;
	if (h->q[0].len + h->q[1].len != 0 && h->link_free_ns < t)
		t = h->link_free_ns;
	return (t);
}

static void
run_flows(struct host *h, double duration_s)
{
	uint64_t start = mono_ns(), end, now, next_tick, t, ack;

	end = start + (uint64_t)(duration_s * 1e9);
	next_tick = start + TICK_NS;
	while (!stop_requested && (now = mono_ns()) < end) {
		process_acks(h, now);
		send_what_windows_allow(h, now);
		t = serve_link(h, now, &next_tick);
		ack = next_ack_ns(h);
		sleep_until(ack < t ? ack : t);
	}
}

/* An exponential variate of mean m. */
static double
expo(struct host *h, double m)
{

	return (-m * log(1.0 - uniform(h)));
}

static uint8_t
openloop_ecn(struct host *h, const struct openloop *o)
{
	double u = uniform(h);

	if (u < o->share[0])
		return (AQM_ECN_ECT1);
	if (u < o->share[0] + o->share[1])
		return (AQM_ECN_ECT0);
	return (AQM_ECN_NOT_ECT);
}

/*
 * Open-loop arrivals offering o->load times the link rate on average:
 * Poisson, or on/off (exponential on and off periods, Poisson arrivals
 * while on, at the rate that gives the same mean).  Nothing reacts to marks
 * or drops, so a load above 1 fills the queues until DualPI2's overload
 * drops or the limits hold them.
 */
static void
run_openloop(struct host *h, const struct openloop *o, double duration_s)
{
	double gap_ns, on_gap_ns;
	uint64_t start, end, now, next_tick, next, t, on_until = 0;

	/* Mean gap between packets at the offered rate. */
	gap_ns = (double)o->pkt_len * 8e9 / (h->rate_bps * o->load);
	on_gap_ns = o->onoff ? gap_ns * o->on_ns / (o->on_ns + o->off_ns) :
	    gap_ns;
	start = mono_ns();
	end = start + (uint64_t)(duration_s * 1e9);
	next_tick = start + TICK_NS;
	if (o->onoff)
		on_until = start + (uint64_t)expo(h, o->on_ns);
	next = start + (uint64_t)expo(h, on_gap_ns);
	while (!stop_requested && (now = mono_ns()) < end) {
		while (next <= now) {
			if (o->onoff && next >= on_until) {
				/* This burst is over: skip an off period. */
				next = on_until + (uint64_t)expo(h, o->off_ns);
				on_until = next + (uint64_t)expo(h, o->on_ns);
				continue;
			}
			host_enqueue(h, now, o->pkt_len, openloop_ecn(h, o),
			    UINT16_MAX);
			next += (uint64_t)expo(h, on_gap_ns) + 1;
		}
		t = serve_link(h, now, &next_tick);
		if (next < t)
			t = next;
		sleep_until(t);
	}
}

/* "a,b,c": the ECT(1), ECT(0), Not-ECT shares, normalised to sum 1. */
static int
parse_mix(const char *s, double share[3])
{
	char *end;
	double sum = 0;
	int i;

	for (i = 0; i < 3; i++) {
		share[i] = strtod(s, &end);
		if (end == s || !(share[i] >= 0 && share[i] <= 1e6) ||
		    *end != (i < 2 ? ',' : '\0'))
			return (-1);
		sum += share[i];
		s = end + 1;
	}
	if (!(sum > 0))
		return (-1);
	for (i = 0; i < 3; i++)
		share[i] /= sum;
	return (0);
}

/* One trace line: 1 read, 0 at the end, -1 a bad line (said on stderr). */
static int
trace_next(FILE *fp, const char *path, int *line, uint64_t *t_rel,
    unsigned *len, unsigned *ecn)
{
	int n = fscanf(fp, "%" SCNu64 " %u %u", t_rel, len, ecn);

	if (n == EOF)
		return (0);
	(*line)++;
	if (n != 3 || *len == 0 || *len > 65535 || *ecn > 3) {
		fprintf(stderr, "aqm-host: %s:%d: bad packet (want \"time_ns "
		    "len ecn\", len 1..65535, ecn 0..3)\n", path, *line);
		return (-1);
	}
	return (1);
}

/* A trace: lines of "time_ns len ecn", times relative to the start. */
static int
run_trace(struct host *h, const char *path, double duration_s)
{
	FILE *fp = fopen(path, "r");
	uint64_t start, end, now, next_tick, t_rel = 0, t;
	unsigned len = 0, ecn = 0;
	int have, line = 0;

	if (fp == NULL) {
		fprintf(stderr, "aqm-host: cannot open trace %s: %s\n", path,
		    strerror(errno));
		return (-1);
	}
	start = mono_ns();
	end = start + (uint64_t)(duration_s * 1e9);
	next_tick = start + TICK_NS;
	have = trace_next(fp, path, &line, &t_rel, &len, &ecn);
	while (have >= 0 && !stop_requested && (now = mono_ns()) < end) {
		while (have == 1 && start + t_rel <= now) {
			host_enqueue(h, now, len, (uint8_t)ecn, UINT16_MAX);
			have = trace_next(fp, path, &line, &t_rel, &len, &ecn);
		}
		t = serve_link(h, now, &next_tick);
		if (have == 0 && h->q[0].len + h->q[1].len == 0)
			break;
		if (have == 1 && start + t_rel < t)
			t = start + t_rel;
		sleep_until(t);
	}
	fclose(fp);
	return (have < 0 ? -1 : 0);
}

/*
 * As fast as possible: keep about `backlog` packets queued so that verdicts
 * have a chance to arrive, and log every decision for the stress test.
 */
static void
run_stress(struct host *h, uint64_t npkts, uint32_t backlog, double pps)
{
	static const uint8_t ecns[4] = { AQM_ECN_ECT1, AQM_ECN_ECT0,
	    AQM_ECN_NOT_ECT, AQM_ECN_CE };
	uint64_t now, next_tick = 0, i, start = mono_ns();
	int k;

	for (i = 0; i < npkts && !stop_requested; i++) {
		if (pps > 0)
			sleep_until(start + (uint64_t)((double)i * 1e9 / pps));
		now = mono_ns();
		host_enqueue(h, now, 64 + (uint32_t)(uniform(h) * 1437),
		    ecns[i & 3], UINT16_MAX);
		while (h->q[0].len + h->q[1].len > backlog)
			host_transmit(h, mono_ns());
		if (now >= next_tick) {
			aqm_tick(h->core, now);
			(void)aqm_lregion_watch(&h->reg, h->core, now,
			    "aqm-host");
			next_tick = now + TICK_NS;
		}
	}
	while (h->q[0].len + h->q[1].len != 0)
		host_transmit(h, mono_ns());
	/* Let the last verdicts in, so each is counted applied, late or bad. */
	for (k = 0; k < 200; k++) {
		aqm_tick(h->core, mono_ns());
		usleep(1000);
	}
}

/* -- set up and report ------------------------------------------------------ */

/* 1 when a data path holds fd's region (its producer lock is taken). */
static int
producer_alive(int fd)
{
	struct flock fl;

	if (aqm_lregion_lock(fd, F_OFD_GETLK, &fl) != 0)
		return (1);		/* cannot tell: assume it is */
	return (fl.l_type != F_UNLCK);
}

/*
 * What is at path, found there when we wanted to publish our region:
 * 1 a stale region of ours whose data path is gone (safe to remove), 0 not
 * ours to remove (why says what it is).
 */
static int
region_stale(const char *path, char *why, size_t len)
{
	struct aqm_chan_hdr hdr;
	struct stat st, tst;
	char target[128], tail;
	ssize_t n;
	int fd, pid, fdn, live;

	if (lstat(path, &st) != 0) {
		snprintf(why, len, "cannot be examined: %s", strerror(errno));
		return (errno == ENOENT);
	}
	if (st.st_uid != geteuid()) {
		snprintf(why, len, "belongs to uid %u (mode %04o), not to uid "
		    "%u: refusing to use or replace it; remove it if no data "
		    "path of yours made it", (unsigned)st.st_uid,
		    (unsigned)(st.st_mode & 07777), (unsigned)geteuid());
		return (0);
	}
	if (S_ISLNK(st.st_mode)) {
		n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		if (n <= 0 || sscanf(target, "/proc/%d/fd/%d%c", &pid, &fdn,
		    &tail) != 2) {
			snprintf(why, len, "is a link to %s, not a data path's "
			    "region: remove it", target);
			return (0);
		}
		fd = open(target, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			return (1);	/* its process or descriptor is gone */
		live = fstat(fd, &tst) == 0 && S_ISREG(tst.st_mode) &&
		    producer_alive(fd);
		close(fd);
		if (!live)
			return (1);
		snprintf(why, len, "is the region of a running data path (pid "
		    "%d)", pid);
		return (0);
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, len, "is not a region (mode %06o): remove it",
		    (unsigned)st.st_mode);
		return (0);
	}
	/*
	 * A shm object (--keep-shm, the Python test host): stale when nobody
	 * holds its producer lock and either it is no region or its data path
	 * left it (producer flag clear).
	 */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, len, "cannot be opened: %s", strerror(errno));
		return (0);
	}
	live = producer_alive(fd);
	if (!live && pread(fd, &hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
	    hdr.magic == AQM_CHAN_MAGIC &&
	    (hdr.flags & AQM_CHAN_F_PRODUCER_UP) != 0)
		live = 2;
	close(fd);
	if (live == 1)
		snprintf(why, len, "is the region of a running data path");
	else if (live == 2)
		snprintf(why, len, "is a region whose data path says it is up "
		    "(one killed without a lock?): remove it if none runs");
	return (live == 0);
}

/*
 * Publish name: create (O_EXCL) with create(), and if something is there,
 * replace it once when it is a stale region of ours.
 */
static int
publish(struct host *h, int (*create)(struct host *))
{
	char why[256], judged[128], now[128];
	ssize_t n1, n2;
	int tries;

	for (tries = 0; tries < 3; tries++) {
		if (create(h) == 0)
			return (0);
		if (errno != EEXIST)
			break;
		n1 = readlink(h->reg.path, judged, sizeof(judged));
		if (!region_stale(h->reg.path, why, sizeof(why))) {
			fprintf(stderr, "aqm-host: %s %s\n", h->reg.path, why);
			return (-1);
		}
		/*
		 * Another host starting now may have replaced it meanwhile:
		 * remove only what was judged (then our create may lose the
		 * race, and the next pass sees the winner, alive).
		 */
		n2 = readlink(h->reg.path, now, sizeof(now));
		if (n1 != n2 || (n1 > 0 && memcmp(judged, now, (size_t)n1) != 0))
			continue;
		fprintf(stderr, "aqm-host: %s: removing a stale region (its data "
		    "path is gone)\n", h->reg.path);
		if (unlink(h->reg.path) != 0 && errno != ENOENT)
			break;
	}
	fprintf(stderr, "aqm-host: cannot create %s: %s\n", h->reg.path,
	    strerror(errno));
	return (-1);
}

/* --keep-shm: a POSIX shm object that outlives us, unsealed. */
static int
create_shm(struct host *h)
{
	struct flock fl;
	int fd;

	fd = shm_open(h->shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return (-1);
	if (fchmod(fd, 0600) != 0 ||
	    ftruncate(fd, (off_t)h->reg.size) != 0 ||
	    aqm_lregion_lock(fd, F_OFD_SETLK, &fl) != 0) {
		fprintf(stderr, "aqm-host: sizing %s: %s\n", h->shm_name,
		    strerror(errno));
		close(fd);
		errno = EIO;
		return (-1);
	}
	h->reg.fd = fd;
	return (0);
}

/* Our sealed memfd, published as a link /dev/shm/NAME -> /proc/PID/fd/N. */
static int
create_link(struct host *h)
{

	return (aqm_lregion_link(&h->reg));
}

/*
 * The region (aqm_lregion.h): by default our sealed memfd, published under
 * /dev/shm/NAME as a link to our descriptor, which dies with us.
 */
static int
open_region(struct host *h, const char *name, uint32_t se, uint32_t ve,
    int keep)
{

	aqm_lregion_init(&h->reg, name, se, ve);
	if (keep) {
		snprintf(h->shm_name, sizeof(h->shm_name), "/%s", name);
		if (publish(h, create_shm) != 0)
			return (-1);
	} else if (aqm_lregion_memfd(&h->reg, "aqm-host", name) != 0 ||
	    publish(h, create_link) != 0)
		return (-1);
	return (aqm_lregion_map(&h->reg, "aqm-host"));
}

static void
print_report(struct host *h, FILE *out, int json, double wall_s)
{
	struct aqm_counters c;
	uint64_t decided;
	double model_share;
	int i;

	aqm_counters_get(h->core, &c);
	decided = c.decisions_model + c.decisions_fallback;
	model_share = decided ? (double)c.decisions_model / decided : 0;
	if (!json) {
		fprintf(out, "aqm-host: %.1f s, %.1f Mbit/s offered, %.1f delivered "
		    "of %.1f\n", wall_s, h->bytes_offered * 8 / wall_s / 1e6,
		    h->bytes_sent * 8 / wall_s / 1e6, h->rate_bps / 1e6);
		fprintf(out, "  decisions: %" PRIu64 " (model %.1f%%, DualPI2 "
		    "%.1f%%)\n", decided, 100 * model_share,
		    100 * (1 - model_share));
		for (i = 1; i >= 0; i--)
			fprintf(out, "  %s queue: %" PRIu64 " pkts, sojourn p50 %.3f "
			    "p99 %.3f ms, marks %" PRIu64 "+%" PRIu64
			    " drops %" PRIu64 "+%" PRIu64 " (DualPI2+model),"
			    " limit drops %" PRIu64 "\n", i ? "L" : "C",
			    c.pkts_in[i], percentile_ms(&h->soj[i], 50),
			    percentile_ms(&h->soj[i], 99), c.marks_fallback[i],
			    c.marks_model[i], c.drops_fallback[i],
			    c.drops_model[i], c.drops_limit[i]);
		fprintf(out, "  verdicts: applied %" PRIu64 ", late %" PRIu64
		    ", bad %" PRIu64 "; states published %" PRIu64
		    ", lost %" PRIu64 "; p' %.4f\n", c.verdicts_applied,
		    c.verdicts_late, c.verdicts_bad, c.states_published,
		    c.states_lost, aqm_prob_base(h->core) / 4294967295.0);
		return;
	}
	fprintf(out, "{\"wall_s\": %.3f, \"link_mbps\": %.3f, "
	    "\"offered_mbps\": %.3f, "
	    "\"delivered_mbps\": %.3f, \"queued_at_end\": [%u, %u], "
	    "\"decisions\": %" PRIu64 ", "
	    "\"model_share\": %.6f, \"fallback_share\": %.6f, "
	    "\"p_prime\": %.6f",
	    wall_s, h->rate_bps / 1e6, h->bytes_offered * 8 / wall_s / 1e6,
	    h->bytes_sent * 8 / wall_s / 1e6,
	    h->q[0].len, h->q[1].len, decided, model_share,
	    decided ? 1 - model_share : 0,
	    aqm_prob_base(h->core) / 4294967295.0);
	for (i = 0; i < 2; i++)
		fprintf(out, ", \"sojourn_ms_%s\": {\"p50\": %.4f, \"p90\": %.4f, "
		    "\"p99\": %.4f, \"p999\": %.4f, \"n\": %" PRIu64 "}",
		    i ? "l" : "c", percentile_ms(&h->soj[i], 50),
		    percentile_ms(&h->soj[i], 90), percentile_ms(&h->soj[i], 99),
		    percentile_ms(&h->soj[i], 99.9), h->soj[i].n);
#define PQ(name) fprintf(out, ", \"" #name "\": [%" PRIu64 ", %" PRIu64 "]", \
	c.name[0], c.name[1])
#define PS(name) fprintf(out, ", \"" #name "\": %" PRIu64, c.name)
	PQ(pkts_in); PQ(bytes_in); PQ(pkts_out); PQ(bytes_out);
	PQ(drops_limit); PQ(marks_model); PQ(drops_model);
	PQ(marks_fallback); PQ(drops_fallback);
	PS(step_marks); PS(decisions_model); PS(decisions_fallback);
	PS(verdicts_applied); PS(verdicts_late); PS(verdicts_bad);
	PS(states_published); PS(states_lost); PS(channel_errors);
	PS(pi_updates); PQ(verdicts_capped); PS(states_slot_busy);
#undef PQ
#undef PS
	fprintf(out, ", \"channel_reattaches\": %" PRIu64 ", \"sealed\": %s}\n",
	    h->reg.reattaches, h->reg.published ? "true" : "false");
}

static void
usage(void)
{

	fprintf(stderr,
	    "usage: aqm-host [--shm NAME | --no-channel] [--rate-mbps R]\n"
	    "         [--duration S] [--rtt-ms MS] [--l4s N] [--classic-ecn N]\n"
	    "         [--classic N]\n"
	    "         [--load F [--arrivals poisson|onoff] [--on-ms MS]\n"
	    "          [--off-ms MS] [--mix ECT1,ECT0,NOTECT] [--pkt-len N]]\n"
	    "         [--trace FILE] [--stress NPKTS]\n"
	    "         [--stress-log FILE] [--pps N] [--backlog N]\n"
	    "         [--wait-consumer S]\n"
	    "         [--state-ring N] [--verdict-ring N] [--keep-shm]\n"
	    "         [--seed N] [--verdict-guard 0|1|2]\n"
	    "         [--harm-budget PCT|off] [--json]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "shm", required_argument, NULL, 's' },
		{ "no-channel", no_argument, NULL, 'n' },
		{ "rate-mbps", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "rtt-ms", required_argument, NULL, 'R' },
		{ "l4s", required_argument, NULL, 'L' },
		{ "classic-ecn", required_argument, NULL, 'E' },
		{ "classic", required_argument, NULL, 'C' },
		{ "trace", required_argument, NULL, 't' },
		{ "stress", required_argument, NULL, 'S' },
		{ "stress-log", required_argument, NULL, 'l' },
		{ "backlog", required_argument, NULL, 'b' },
		{ "pps", required_argument, NULL, 'p' },
		{ "wait-consumer", required_argument, NULL, 'w' },
		{ "state-ring", required_argument, NULL, 'x' },
		{ "verdict-ring", required_argument, NULL, 'y' },
		{ "keep-shm", no_argument, NULL, 'k' },
		{ "seed", required_argument, NULL, 'z' },
		{ "verdict-guard", required_argument, NULL, 'g' },
		{ "harm-budget", required_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },
		{ "load", required_argument, NULL, 'O' },
		{ "arrivals", required_argument, NULL, 'A' },
		{ "on-ms", required_argument, NULL, 'N' },
		{ "off-ms", required_argument, NULL, 'F' },
		{ "mix", required_argument, NULL, 'M' },
		{ "pkt-len", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct aqm_params params;
	struct host h;
	struct openloop ol = { 0, 0, 10e6, 10e6, { 0.5, 0.25, 0.25 }, 1500 };
	const char *shm = "aqm_llm", *trace = NULL, *stress_log = NULL;
	double duration = 5, rtt_ms = 20, wait_s = 0, pps = 0, wall;
	uint64_t stress = 0, start;
	uint32_t backlog = 256, se = 65536, ve = 65536;
	int n_l = 2, n_ce = 1, n_c = 1, json = 0, keep = 0, channel = 1;
	int ch, i, rc = 0;

	memset(&h, 0, sizeof(h));
	aqm_params_default(&params);
	h.rate_bps = 100e6;
	h.rng = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's': shm = optarg; break;
		case 'n': channel = 0; break;
		case 'r': h.rate_bps = num_arg("rate-mbps", optarg, 0.1,
		    100000) * 1e6; break;
		case 'd': duration = num_arg("duration", optarg, 0, 86400);
		    break;
		case 'R': rtt_ms = num_arg("rtt-ms", optarg, 0, 10000); break;
		case 'L': n_l = (int)num_arg("l4s", optarg, 0, 32); break;
		case 'E': n_ce = (int)num_arg("classic-ecn", optarg, 0, 16);
		    break;
		case 'C': n_c = (int)num_arg("classic", optarg, 0, 16); break;
		case 't': trace = optarg; break;
		case 'S': stress = (uint64_t)num_arg("stress", optarg, 1,
		    1e10); break;
		case 'l': stress_log = optarg; break;
		case 'b': backlog = (uint32_t)num_arg("backlog", optarg, 1,
		    AQM_LIMIT_PKTS_MAX - 1); break;
		case 'p': pps = num_arg("pps", optarg, 0, 1e9); break;
		case 'w': wait_s = num_arg("wait-consumer", optarg, 0, 600);
		    break;
		case 'x': se = (uint32_t)num_arg("state-ring", optarg, 1,
		    AQM_RING_MAX_ENTRIES); break;
		case 'y': ve = (uint32_t)num_arg("verdict-ring", optarg, 1,
		    AQM_RING_MAX_ENTRIES); break;
		case 'k': keep = 1; break;
		case 'z': h.rng = (uint64_t)num_arg("seed", optarg, 0,
		    1e18) | 1; break;
		case 'g': params.verdict_guard = (uint32_t)num_arg(
		    "verdict-guard", optarg, 0, AQM_GUARD_DUALPI2); break;
		case 'H':
			/* "off" applies every verdict as sent: tests, experiments. */
			params.harm_budget_pct = strcmp(optarg, "off") == 0 ?
			    AQM_HARM_BUDGET_OFF : (uint32_t)num_arg("harm-budget",
			    optarg, 0, AQM_HARM_BUDGET_MAX);
			break;
		case 'j': json = 1; break;
		case 'O': ol.load = num_arg("load", optarg, 0.001, 100);
		    break;
		case 'A':
			if (strcmp(optarg, "poisson") == 0)
				ol.onoff = 0;
			else if (strcmp(optarg, "onoff") == 0)
				ol.onoff = 1;
			else {
				fprintf(stderr, "aqm-host: --arrivals %s: want "
				    "poisson or onoff\n", optarg);
				exit(2);
			}
			break;
		case 'N': ol.on_ns = num_arg("on-ms", optarg, 0.01, 1e6) *
		    1e6; break;
		case 'F': ol.off_ns = num_arg("off-ms", optarg, 0.01, 1e6) *
		    1e6; break;
		case 'M':
			if (parse_mix(optarg, ol.share) != 0) {
				fprintf(stderr, "aqm-host: --mix %s: want three "
				    "shares ECT1,ECT0,NOTECT, not all 0\n",
				    optarg);
				exit(2);
			}
			break;
		case 'P': ol.pkt_len = (uint32_t)num_arg("pkt-len", optarg,
		    40, 65535); break;
		default: usage();
		}
	}
	if (optind != argc || strlen(shm) == 0 || strlen(shm) > 100 ||
	    strchr(shm, '/') != NULL)
		usage();
	if ((ol.load > 0) + (trace != NULL) + (stress != 0) > 1) {
		fprintf(stderr, "aqm-host: --load, --trace and --stress are "
		    "different loads: pick one\n");
		return (2);
	}

	/* Each of these stops the run cleanly: the report, then our name goes. */
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, on_signal);
	/* Wake on time: the default 50 us slack is a packet time at 100 Mbit/s. */
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	h.core = xcalloc(1, (size_t)aqm_core_size());
	aqm_core_init(h.core, &params, h.rng, mono_ns());
	for (i = 0; i < 2; i++) {
		h.q[i].cap = AQM_LIMIT_PKTS_MAX + 1;
		h.q[i].slot = xcalloc(h.q[i].cap, sizeof(struct hpkt));
		h.soj[i].count = xcalloc(HIST_BUCKETS, sizeof(uint64_t));
	}
	if (trace == NULL && stress == 0 && ol.load == 0) {
		h.nflows = n_l + n_ce + n_c;
		if (h.nflows == 0 || h.nflows > MAX_FLOWS) {
			fprintf(stderr, "aqm-host: want 1..%d flows\n",
			    MAX_FLOWS);
			return (2);
		}
		h.flows = xcalloc((size_t)h.nflows, sizeof(struct flow));
		for (i = 0; i < h.nflows; i++) {
			h.flows[i].kind = i < n_l ? FLOW_L4S :
			    i < n_l + n_ce ? FLOW_CLASSIC_ECN : FLOW_CLASSIC;
			/* Spread base RTTs a little so flows do not lock step. */
			h.flows[i].rtt_ns = (uint64_t)(rtt_ms * 1e6 *
			    (0.9 + 0.2 * uniform(&h)));
			h.flows[i].cwnd = 10;
			h.flows[i].ssthresh = MAX_CWND;
		}
	}
	if (channel) {
		if (open_region(&h, shm, se, ve, keep) != 0) {
			rc = 1;
			goto out;
		}
		if (aqm_attach(h.core, h.reg.base, h.reg.size, mono_ns()) !=
		    AQM_OK) {
			fprintf(stderr, "aqm-host: core refused the region\n");
			rc = 1;
			goto out;
		}
		if (wait_s > 0)
			aqm_lregion_wait_consumer(&h.reg, wait_s);
	}
	if (stress_log != NULL && strcmp(stress_log, "-") == 0)
		h.stress_log = stdout;	/* the report goes to stderr then */
	else if (stress_log != NULL &&
	    (h.stress_log = fopen(stress_log, "wb")) == NULL) {
		fprintf(stderr, "aqm-host: %s: %s\n", stress_log,
		    strerror(errno));
		rc = 1;
		goto out;
	}

	start = mono_ns();
	if (stress != 0)
		run_stress(&h, stress, backlog, pps);
	else if (trace != NULL)
		rc = run_trace(&h, trace, duration) != 0;
	else if (ol.load > 0)
		run_openloop(&h, &ol, duration);
	else
		run_flows(&h, duration);
	wall = (mono_ns() - start) / 1e9;
	aqm_tick(h.core, mono_ns());
	if (rc == 0)
		print_report(&h, h.stress_log == stdout ? stderr : stdout,
		    json, wall > 0 ? wall : 1e-9);
out:
	if (h.stress_log != NULL && h.stress_log != stdout)
		fclose(h.stress_log);
	aqm_detach(h.core);
	aqm_lregion_unpublish(&h.reg);
	if (stop_requested != 0 && stop_requested != SIGINT &&
	    stop_requested != SIGTERM)
		fprintf(stderr, "aqm-host: stopped by signal %d\n",
		    (int)stop_requested);
	return (rc);
}
