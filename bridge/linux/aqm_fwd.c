/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm-fwd: the AQM-LLM data path on real packets, on Linux, in user space.
 *
 * A router namespace routes the traffic of one direction into a TUN device
 * (--fwd-tun) and that of the other direction into a second one
 * (--rev-tun).  This process reads the IP packets from them and writes them
 * back, which hands them to the router's stack again to be routed on:
 *
 *	forward:  read --fwd-tun -> the core's two queues -> a bottleneck at
 *		  --rate-mbps or a Mahimahi --trace -> mark (CE written into
 *		  the IPv4 or IPv6 header) or drop -> the path's one-way delay
 *		  -> write --fwd-tun
 *	reverse:  read --rev-tun -> the path's one-way delay -> write
 *		  --rev-tun (acknowledgements meet no queue)
 *
 * The ECN field classifies (ECT(1) and CE to the L queue, as the core
 * does).  A path is a sender-side address (--path ADDR=RTT_MS; the source
 * of forward packets, the destination of reverse ones) with its base round
 * trip, half of it each way; other packets get --rtt-ms.  The channel
 * region is a sealed memfd published as /dev/shm/NAME, as aqm-host's is
 * (aqm_lregion.h), which aqmllmd opens unchanged; after a channel error
 * the core decides alone until a consumer attaches again.  Nothing here waits for the daemon: a
 * verdict that is not there when its packet leaves is DualPI2's to give.
 *
 * The first line on stdout is "ready" once both devices are attached (and
 * the channel, if any, with its consumer up or --wait-consumer passed); the
 * report (JSON with --json) follows at the end
 * of --duration, or on SIGINT/SIGTERM.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define AQM_PROG	"aqm-fwd"
#include "aqm_core.h"
#include "aqm_lregion.h"
#include "aqm_lutil.h"

#define PKT_MAX		2048		/* bytes a slot holds (MTU 1500) */
#define MAX_PATHS	16
#define MAX_TRACE	(1u << 22)	/* opportunities in one period */
#define OPP_BYTES	1500u		/* one Mahimahi opportunity */
#define SOJOURN_CAP	(1u << 20)
#define TICK_NS		1000000ull
#define SPIN_NS		20000ull
#define READ_BURST	64

struct pkt {
	struct aqm_pkt	 meta;
	uint64_t	 due_ns;	/* delay line: when it leaves */
	uint16_t	 len;
	uint8_t		 path;
	uint8_t		 pad[5];
	uint8_t		 data[PKT_MAX];
};

/* A ring of packet pointers. */
struct ring {
	struct pkt	**slot;
	uint32_t	 cap, head, len;
};

struct path {
	int		 family;	/* 0: the default path */
	uint8_t		 addr[16];
	uint64_t	 owd_ns;	/* one way: half the base RTT */
};

struct samples {
	uint32_t	*v;
	uint64_t	 n;
};

struct fwd {
	struct aqm_core	*core;
	struct aqm_lregion reg;		/* the channel region, if any */
	int		 have_reg;
	int		 fd_fwd, fd_rev;
	struct pkt	*pool;
	struct ring	 freel;
	struct ring	 q[AQM_NQUEUES];
	struct ring	 line_fwd[MAX_PATHS], line_rev[MAX_PATHS];
	struct path	 paths[MAX_PATHS];
	int		 npaths;
	/* The bottleneck: a rate, or a trace's opportunities. */
	double		 rate_bps;
	uint64_t	*opp_ns;
	uint64_t	 nopp, period_ns;
	uint64_t	 opp_next, opp_cur_ns;
	uint32_t	 opp_left;
	uint64_t	 start_ns;
	uint64_t	 link_free_ns;
	/* Counts. */
	uint64_t	 rx_fwd, rx_rev, tx_fwd, tx_rev;
	uint64_t	 bytes_in, bytes_sent;
	uint64_t	 ce_v4, ce_v6, ce_already, mark_not_ect;
	uint64_t	 ecn_in[4];
	uint64_t	 not_ip, oversize, pool_empty, write_errors;
	struct samples	 soj[AQM_NQUEUES];
};

static void
ring_init(struct ring *r, uint32_t cap)
{

	r->slot = xcalloc(cap, sizeof(*r->slot));
	r->cap = cap;
}

static int
ring_push(struct ring *r, struct pkt *p)
{

	if (r->len == r->cap)
		return (-1);
	r->slot[(r->head + r->len) % r->cap] = p;
	r->len++;
	return (0);
}

static struct pkt *
ring_pop(struct ring *r)
{
	struct pkt *p;

	if (r->len == 0)
		return (NULL);
	p = r->slot[r->head];
	r->head = (r->head + 1) % r->cap;
	r->len--;
	return (p);
}

static struct pkt *
ring_peek(const struct ring *r)
{

	return (r->len != 0 ? r->slot[r->head] : NULL);
}

static uint64_t
head_ts(const struct ring *r)
{

	return (r->len != 0 ? r->slot[r->head]->meta.ts_ns : 0);
}

static void
sample_add(struct samples *s, uint64_t v)
{

	if (s->n < SOJOURN_CAP)
		s->v[s->n] = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
	s->n++;
}

static double
percentile_ms(const struct samples *s, double pct)
{
	uint64_t n = s->n < SOJOURN_CAP ? s->n : SOJOURN_CAP;
	uint64_t i;

	if (n == 0)
		return (0);
	i = (uint64_t)(pct / 100.0 * (double)(n - 1) + 0.5);
	return (s->v[i] / 1e6);
}

/* -- IP headers -------------------------------------------------------------- */

/* The ECN codepoint of an IP packet; -1 if it is not one. */
static int
pkt_ecn(const uint8_t *d, uint32_t len)
{

	if (len >= 20 && (d[0] >> 4) == 4)
		return (d[1] & 0x3);
	if (len >= 40 && (d[0] >> 4) == 6)
		return ((d[1] >> 4) & 0x3);
	return (-1);
}

/*
 * Set CE in an IPv4 or IPv6 header, as dummynet's ecn_mark() does for the
 * FreeBSD module: a Not-ECT packet is left alone (0), a CE one stays as it
 * is (1), an ECT(0) or ECT(1) one gets CE (1), with the IPv4 header
 * checksum updated incrementally (RFC 1624: HC' = ~(~HC + ~m + m') over the
 * 16-bit word that holds the TOS byte).  The packet is never dropped here:
 * the core decides drops, and turns a mark of a Not-ECT packet into one.
 */
static int
ecn_set_ce(uint8_t *d, uint32_t len, struct fwd *f)
{
	uint32_t sum;
	uint16_t old, new, hc;

	switch (pkt_ecn(d, len)) {
	case AQM_ECN_NOT_ECT:
		f->mark_not_ect++;
		return (0);
	case AQM_ECN_CE:
		f->ce_already++;
		return (1);
	case -1:
		return (0);
	}
	if ((d[0] >> 4) == 4) {
		old = (uint16_t)(d[0] << 8 | d[1]);
		d[1] |= 0x3;
		new = (uint16_t)(d[0] << 8 | d[1]);
		hc = (uint16_t)(d[10] << 8 | d[11]);
		sum = (uint32_t)(uint16_t)~hc + (uint16_t)~old + new;
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		hc = (uint16_t)~sum;
		d[10] = (uint8_t)(hc >> 8);
		d[11] = (uint8_t)hc;
		f->ce_v4++;
	} else {
		d[1] |= 0x30;
		f->ce_v6++;
	}
	return (1);
}

/* The path of a packet: by source (forward) or destination (reverse). */
static uint8_t
pkt_path(const struct fwd *f, const uint8_t *d, uint32_t len, int reverse)
{
	const uint8_t *a;
	int i, fam, alen;

	if (len >= 20 && (d[0] >> 4) == 4) {
		fam = 4;
		alen = 4;
		a = d + (reverse ? 16 : 12);
	} else if (len >= 40 && (d[0] >> 4) == 6) {
		fam = 6;
		alen = 16;
		a = d + (reverse ? 24 : 8);
	} else
		return (0);
	for (i = 1; i < f->npaths; i++)
		if (f->paths[i].family == fam &&
		    memcmp(f->paths[i].addr, a, (size_t)alen) == 0)
			return ((uint8_t)i);
	return (0);
}

/* -- the bottleneck ------------------------------------------------------------ */

static uint64_t
opp_at(const struct fwd *f, uint64_t k)
{

	return (f->start_ns + (k / f->nopp) * f->period_ns +
	    f->opp_ns[k % f->nopp]);
}

/* Opportunities before absolute time t. */
static uint64_t
opp_count_before(const struct fwd *f, uint64_t t)
{
	uint64_t rel, full, rest, lo, hi, mid;

	rel = t > f->start_ns ? t - f->start_ns : 0;
	full = rel / f->period_ns;
	rest = rel % f->period_ns;
	lo = 0;
	hi = f->nopp;
	while (lo < hi) {
		mid = (lo + hi) / 2;
		if (f->opp_ns[mid] < rest)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (full * f->nopp + lo);
}

/*
 * When a packet of len bytes that arrived at `arrival` has left the link,
 * on the link's own clock: it starts when both it and the link are there,
 * however late this process gets to it (a finish in the past sends it at
 * once).  With a trace, it leaves at the opportunity that carries its last
 * byte (what is left of the opportunity in use, or the next one);
 * opportunities that passed while the link was idle, before the packet
 * arrived, are lost.  With a rate, it leaves its transmission time after
 * it started.
 */
static uint64_t
link_finish(struct fwd *f, uint64_t arrival, uint32_t len)
{
	uint64_t tx;

	if (f->nopp != 0) {
		if (f->opp_left >= len && arrival <= f->opp_cur_ns) {
			f->opp_left -= len;
			return (f->opp_cur_ns);
		}
		if (opp_at(f, f->opp_next) < arrival)
			f->opp_next = opp_count_before(f, arrival);
		f->opp_cur_ns = opp_at(f, f->opp_next++);
		f->opp_left = OPP_BYTES > len ? OPP_BYTES - len : 0;
		return (f->opp_cur_ns);
	}
	tx = (uint64_t)((double)len * 8e9 / f->rate_bps);
	return ((f->link_free_ns > arrival ? f->link_free_ns : arrival) + tx);
}

static int
load_trace(struct fwd *f, const char *path)
{
	FILE *fp = fopen(path, "r");
	unsigned long long ms;
	uint64_t n = 0;
	int c, line = 0;

	if (fp == NULL) {
		fprintf(stderr, "aqm-fwd: cannot open trace %s: %s\n", path,
		    strerror(errno));
		return (-1);
	}
	f->opp_ns = xcalloc(MAX_TRACE, sizeof(uint64_t));
	for (;;) {
		c = fscanf(fp, "%llu", &ms);
		if (c == EOF)
			break;
		line++;
		if (c != 1 || ms > 86400000ull || n == MAX_TRACE ||
		    (n != 0 && ms * 1000000ull < f->opp_ns[n - 1])) {
			fprintf(stderr, "aqm-fwd: %s:%d: not a Mahimahi trace "
			    "(one integer ms per line, in time order, at most "
			    "%u lines)\n", path, line, MAX_TRACE);
			fclose(fp);
			return (-1);
		}
		f->opp_ns[n++] = ms * 1000000ull;
	}
	fclose(fp);
	if (n == 0) {
		fprintf(stderr, "aqm-fwd: %s: empty trace\n", path);
		return (-1);
	}
	f->nopp = n;
	f->period_ns = f->opp_ns[n - 1] > 1000000ull ? f->opp_ns[n - 1] :
	    1000000ull;
	return (0);
}

/* -- the data path ---------------------------------------------------------- */

static void
pkt_free(struct fwd *f, struct pkt *p)
{

	(void)ring_push(&f->freel, p);
}

static void
emit(struct fwd *f, int fd, struct pkt *p, uint64_t *count)
{

	if (write(fd, p->data, p->len) != (ssize_t)p->len)
		f->write_errors++;
	else
		(*count)++;
	pkt_free(f, p);
}

static void	serve_link(struct fwd *f, uint64_t now);

/*
 * Read what is waiting on one device (up to a burst).  Each packet is
 * stamped when it is read, and the link is served after each one: a burst
 * takes longer to read than a fast link takes to send it.
 */
static void
rx(struct fwd *f, int reverse)
{
	uint64_t now;
	struct pkt *p;
	ssize_t n;
	int i, ecn;

	for (i = 0; i < READ_BURST; i++) {
		p = ring_pop(&f->freel);
		if (p == NULL) {
			/* Out of buffers: read into nothing, count a drop. */
			uint8_t sink[PKT_MAX];

			if (read(reverse ? f->fd_rev : f->fd_fwd, sink,
			    sizeof(sink)) <= 0)
				return;
			f->pool_empty++;
			continue;
		}
		n = read(reverse ? f->fd_rev : f->fd_fwd, p->data,
		    sizeof(p->data));
		if (n <= 0) {
			pkt_free(f, p);
			return;
		}
		if (n >= (ssize_t)sizeof(p->data)) {
			f->oversize++;
			pkt_free(f, p);
			continue;
		}
		p->len = (uint16_t)n;
		now = mono_ns();
		p->path = pkt_path(f, p->data, p->len, reverse);
		if (reverse) {
			f->rx_rev++;
			p->due_ns = now + f->paths[p->path].owd_ns;
			if (ring_push(&f->line_rev[p->path], p) != 0)
				pkt_free(f, p);
			continue;
		}
		f->rx_fwd++;
		ecn = pkt_ecn(p->data, p->len);
		if (ecn < 0) {
			/* Not IP (the stack sends none here): pass it on. */
			f->not_ip++;
			emit(f, f->fd_fwd, p, &f->tx_fwd);
			continue;
		}
		f->ecn_in[ecn]++;
		f->bytes_in += p->len;
		if (aqm_enqueue(f->core, now, p->len, (uint8_t)ecn, &p->meta) ==
		    AQM_V_DROP) {
			pkt_free(f, p);
			continue;
		}
		if (ring_push(&f->q[p->meta.queue], p) != 0) {
			aqm_forget(f->core, &p->meta,
			    head_ts(&f->q[p->meta.queue]));
			pkt_free(f, p);
		}
		serve_link(f, now);
	}
}

/*
 * Serve the link while it is free: select, pop, decide, mark or drop.  The
 * clock is read again when the link looks busy, so that a link faster than
 * this loop (a packet time below a pass's cost) is served back to back
 * rather than one packet per pass.
 */
static void
serve_link(struct fwd *f, uint64_t now)
{
	struct aqm_decision d;
	struct pkt *p;
	uint64_t finish;
	int q;

	for (;;) {
		if (f->link_free_ns > now && (now = mono_ns()) < f->link_free_ns)
			return;
		q = aqm_select(f->core, now);
		if (q == AQM_SELECT_NONE)
			return;
		p = ring_pop(&f->q[q]);
		aqm_dequeue(f->core, now, &p->meta, head_ts(&f->q[q]), &d);
		if (d.verdict == AQM_V_DROP) {
			pkt_free(f, p);
			continue;
		}
		if (d.verdict == AQM_V_MARK)
			(void)ecn_set_ce(p->data, p->len, f);
		sample_add(&f->soj[q], now - p->meta.ts_ns);
		f->bytes_sent += p->len;
		finish = link_finish(f, p->meta.ts_ns, p->len);
		f->link_free_ns = finish;
		p->due_ns = finish + f->paths[p->path].owd_ns;
		if (ring_push(&f->line_fwd[p->path], p) != 0)
			pkt_free(f, p);
	}
}

/* Write what the delay lines hold that is due; returns the next due time. */
static uint64_t
release(struct fwd *f, uint64_t now)
{
	struct pkt *p;
	uint64_t next = UINT64_MAX;
	int i;

	for (i = 0; i < f->npaths; i++) {
		while ((p = ring_peek(&f->line_fwd[i])) != NULL &&
		    p->due_ns <= now)
			emit(f, f->fd_fwd, ring_pop(&f->line_fwd[i]),
			    &f->tx_fwd);
		if (p != NULL && p->due_ns < next)
			next = p->due_ns;
		while ((p = ring_peek(&f->line_rev[i])) != NULL &&
		    p->due_ns <= now)
			emit(f, f->fd_rev, ring_pop(&f->line_rev[i]),
			    &f->tx_rev);
		if (p != NULL && p->due_ns < next)
			next = p->due_ns;
	}
	return (next);
}

static void
run(struct fwd *f, double duration_s)
{
	struct pollfd pfd[2];
	struct timespec ts;
	uint64_t end, now, next_tick, t, due;
	int n;

	pfd[0].fd = f->fd_fwd;
	pfd[1].fd = f->fd_rev;
	pfd[0].events = pfd[1].events = POLLIN;
	now = mono_ns();
	end = duration_s > 0 ? now + (uint64_t)(duration_s * 1e9) : UINT64_MAX;
	next_tick = now + TICK_NS;
	while (!stop_requested && now < end) {
		rx(f, 0);
		rx(f, 1);
		now = mono_ns();
		serve_link(f, now);
		due = release(f, now);
		if (now >= next_tick) {
			aqm_tick(f->core, now);
			if (f->have_reg)
				(void)aqm_lregion_watch(&f->reg, f->core, now,
				    "aqm-fwd");
			next_tick = now + TICK_NS;
		}
		t = next_tick < end ? next_tick : end;
		if (due < t)
			t = due;
		if (f->q[0].len + f->q[1].len != 0 && f->link_free_ns < t)
			t = f->link_free_ns;
		now = mono_ns();
		if (t <= now)
			continue;
		if (t - now < SPIN_NS) {
			n = poll(pfd, 2, 0);
			if (n == 0)
				while ((now = mono_ns()) < t)
					;
		} else {
			t -= SPIN_NS / 2;
			ts.tv_sec = (time_t)((t - now) / 1000000000ull);
			ts.tv_nsec = (long)((t - now) % 1000000000ull);
			(void)ppoll(pfd, 2, &ts, NULL);
		}
		now = mono_ns();
	}
}

/* -- set up and report ------------------------------------------------------ */

static int
tun_attach(const char *name)
{
	struct ifreq ifr;
	int fd;

	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "aqm-fwd: /dev/net/tun: %s\n", strerror(errno));
		return (-1);
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
		fprintf(stderr, "aqm-fwd: TUN device %s: %s\n", name,
		    strerror(errno));
		close(fd);
		return (-1);
	}
	return (fd);
}

static void
print_report(struct fwd *f, double wall_s, int json)
{
	struct aqm_counters c;
	uint64_t decided;
	double share, link;
	int i;

	aqm_counters_get(f->core, &c);
	decided = c.decisions_model + c.decisions_fallback;
	share = decided ? (double)c.decisions_model / decided : 0;
	for (i = 0; i < 2; i++)
		qsort(f->soj[i].v, f->soj[i].n < SOJOURN_CAP ? f->soj[i].n :
		    SOJOURN_CAP, sizeof(uint32_t), cmp_u32);
	link = f->nopp != 0 ? (double)f->nopp * OPP_BYTES * 8 /
	    (f->period_ns / 1e9) : f->rate_bps;
	if (!json) {
		printf("aqm-fwd: %.1f s, %.1f Mbit/s in, %.1f delivered of "
		    "%.1f; packets %" PRIu64 " forward, %" PRIu64 " reverse\n",
		    wall_s, f->bytes_in * 8 / wall_s / 1e6,
		    f->bytes_sent * 8 / wall_s / 1e6, link / 1e6, f->tx_fwd,
		    f->tx_rev);
		for (i = 1; i >= 0; i--)
			printf("  %s queue: %" PRIu64 " pkts, sojourn p50 %.3f "
			    "p99 %.3f ms, marks %" PRIu64 "+%" PRIu64 " drops %"
			    PRIu64 "+%" PRIu64 " (DualPI2+model)\n",
			    i ? "L" : "C", c.pkts_in[i],
			    percentile_ms(&f->soj[i], 50),
			    percentile_ms(&f->soj[i], 99), c.marks_fallback[i],
			    c.marks_model[i], c.drops_fallback[i],
			    c.drops_model[i]);
		printf("  CE written: %" PRIu64 " IPv4, %" PRIu64 " IPv6; "
		    "verdicts applied %" PRIu64 ", late %" PRIu64 "\n",
		    f->ce_v4, f->ce_v6, c.verdicts_applied, c.verdicts_late);
		return;
	}
	printf("{\"wall_s\": %.3f, \"link_mbps\": %.3f, \"offered_mbps\": "
	    "%.3f, \"delivered_mbps\": %.3f, \"queued_at_end\": [%u, %u], "
	    "\"decisions\": %" PRIu64 ", \"model_share\": %.6f, "
	    "\"fallback_share\": %.6f, \"p_prime\": %.6f", wall_s, link / 1e6,
	    f->bytes_in * 8 / wall_s / 1e6, f->bytes_sent * 8 / wall_s / 1e6,
	    f->q[0].len, f->q[1].len, decided, share, decided ? 1 - share : 0,
	    aqm_prob_base(f->core) / 4294967295.0);
	for (i = 0; i < 2; i++)
		printf(", \"sojourn_ms_%s\": {\"p50\": %.4f, \"p90\": %.4f, "
		    "\"p99\": %.4f, \"p999\": %.4f, \"n\": %" PRIu64 "}",
		    i ? "l" : "c", percentile_ms(&f->soj[i], 50),
		    percentile_ms(&f->soj[i], 90),
		    percentile_ms(&f->soj[i], 99),
		    percentile_ms(&f->soj[i], 99.9), f->soj[i].n);
#define PQ(name) printf(", \"" #name "\": [%" PRIu64 ", %" PRIu64 "]", \
	c.name[0], c.name[1])
#define PS(name) printf(", \"" #name "\": %" PRIu64, c.name)
#define PF(name) printf(", \"" #name "\": %" PRIu64, f->name)
	PQ(pkts_in); PQ(bytes_in); PQ(pkts_out); PQ(bytes_out);
	PQ(drops_limit); PQ(marks_model); PQ(drops_model);
	PQ(marks_fallback); PQ(drops_fallback); PQ(verdicts_capped);
	PS(step_marks); PS(decisions_model); PS(decisions_fallback);
	PS(verdicts_applied); PS(verdicts_late); PS(verdicts_bad);
	PS(states_published); PS(states_lost); PS(channel_errors);
	PS(pi_updates);
	PF(rx_fwd); PF(rx_rev); PF(tx_fwd); PF(tx_rev); PF(ce_v4); PF(ce_v6);
	PF(ce_already); PF(mark_not_ect); PF(not_ip); PF(oversize);
	PF(pool_empty); PF(write_errors);
	printf(", \"channel_reattaches\": %" PRIu64 ", \"sealed\": %s",
	    f->reg.reattaches, f->have_reg ? "true" : "false");
#undef PQ
#undef PS
#undef PF
	printf(", \"ecn_in\": [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %"
	    PRIu64 "]}\n", f->ecn_in[0], f->ecn_in[1], f->ecn_in[2],
	    f->ecn_in[3]);
}

static void
usage(void)
{

	fprintf(stderr,
	    "usage: aqm-fwd --fwd-tun DEV --rev-tun DEV\n"
	    "         [--rate-mbps R | --trace FILE] [--rtt-ms MS]\n"
	    "         [--path ADDR=RTT_MS ...] [--duration S]\n"
	    "         [--shm NAME | --no-channel] [--wait-consumer S]\n"
	    "         [--state-ring N] [--verdict-ring N] [--pool N]\n"
	    "         [--limit-pkts N] [--seed N] [--json]\n");
	exit(2);
}

static void
path_arg(struct fwd *f, const char *s)
{
	char addr[64];
	const char *eq = strchr(s, '=');
	struct path *p;

	if (f->npaths == MAX_PATHS) {
		fprintf(stderr, "aqm-fwd: at most %d paths\n", MAX_PATHS - 1);
		exit(2);
	}
	p = &f->paths[f->npaths];
	if (eq == NULL || (size_t)(eq - s) >= sizeof(addr)) {
		fprintf(stderr, "aqm-fwd: --path %s: want ADDR=RTT_MS\n", s);
		exit(2);
	}
	memcpy(addr, s, (size_t)(eq - s));
	addr[eq - s] = '\0';
	if (inet_pton(AF_INET, addr, p->addr) == 1)
		p->family = 4;
	else if (inet_pton(AF_INET6, addr, p->addr) == 1)
		p->family = 6;
	else {
		fprintf(stderr, "aqm-fwd: --path %s: %s is not an IPv4 or "
		    "IPv6 address\n", s, addr);
		exit(2);
	}
	p->owd_ns = (uint64_t)(num_arg("path", eq + 1, 0, 10000) * 1e6 / 2);
	f->npaths++;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "fwd-tun", required_argument, NULL, 'f' },
		{ "rev-tun", required_argument, NULL, 'r' },
		{ "rate-mbps", required_argument, NULL, 'R' },
		{ "trace", required_argument, NULL, 't' },
		{ "rtt-ms", required_argument, NULL, 'T' },
		{ "path", required_argument, NULL, 'p' },
		{ "duration", required_argument, NULL, 'd' },
		{ "shm", required_argument, NULL, 's' },
		{ "no-channel", no_argument, NULL, 'n' },
		{ "wait-consumer", required_argument, NULL, 'w' },
		{ "state-ring", required_argument, NULL, 'x' },
		{ "verdict-ring", required_argument, NULL, 'y' },
		{ "pool", required_argument, NULL, 'P' },
		{ "limit-pkts", required_argument, NULL, 'l' },
		{ "seed", required_argument, NULL, 'z' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	static struct fwd f;
	struct aqm_params params;
	const char *fwd_tun = NULL, *rev_tun = NULL, *trace = NULL;
	const char *shm = "aqm_llm";
	double duration = 0, wait_s = 0, start;
	uint64_t seed = 1;
	uint32_t se = 65536, ve = 65536, pool = 32768, i;
	int ch, channel = 1, json = 0, rc = 0;

	aqm_params_default(&params);
	f.rate_bps = 100e6;
	f.npaths = 1;
	f.paths[0].owd_ns = 10000000ull;
	f.fd_fwd = f.fd_rev = -1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'f': fwd_tun = optarg; break;
		case 'r': rev_tun = optarg; break;
		case 'R': f.rate_bps = num_arg("rate-mbps", optarg, 0.01,
		    100000) * 1e6; break;
		case 't': trace = optarg; break;
		case 'T': f.paths[0].owd_ns = (uint64_t)(num_arg("rtt-ms",
		    optarg, 0, 10000) * 1e6 / 2); break;
		case 'p': path_arg(&f, optarg); break;
		case 'd': duration = num_arg("duration", optarg, 0, 86400);
		    break;
		case 's': shm = optarg; break;
		case 'n': channel = 0; break;
		case 'w': wait_s = num_arg("wait-consumer", optarg, 0, 600);
		    break;
		case 'x': se = (uint32_t)num_arg("state-ring", optarg, 1,
		    AQM_RING_MAX_ENTRIES); break;
		case 'y': ve = (uint32_t)num_arg("verdict-ring", optarg, 1,
		    AQM_RING_MAX_ENTRIES); break;
		case 'P': pool = (uint32_t)num_arg("pool", optarg, 64,
		    1 << 20); break;
		case 'l': params.limit_pkts = (uint32_t)num_arg("limit-pkts",
		    optarg, 1, AQM_LIMIT_PKTS_MAX);
		    params.limit_bytes = params.limit_pkts * 1500u; break;
		case 'z': seed = (uint64_t)num_arg("seed", optarg, 0, 1e18);
		    break;
		case 'j': json = 1; break;
		default: usage();
		}
	}
	if (optind != argc || fwd_tun == NULL || rev_tun == NULL ||
	    strlen(shm) == 0 || strlen(shm) > 100 || strchr(shm, '/') != NULL)
		usage();
	if (trace != NULL && load_trace(&f, trace) != 0)
		return (1);

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, SIG_IGN);
	(void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	f.core = xcalloc(1, (size_t)aqm_core_size());
	if (aqm_core_init(f.core, &params, seed, mono_ns()) != AQM_OK) {
		fprintf(stderr, "aqm-fwd: core parameters refused\n");
		return (2);
	}
	f.pool = xcalloc(pool, sizeof(struct pkt));
	ring_init(&f.freel, pool);
	for (i = 0; i < pool; i++)
		(void)ring_push(&f.freel, &f.pool[i]);
	for (i = 0; i < AQM_NQUEUES; i++) {
		ring_init(&f.q[i], AQM_LIMIT_PKTS_MAX + 1);
		f.soj[i].v = xcalloc(SOJOURN_CAP, sizeof(uint32_t));
	}
	for (i = 0; i < (uint32_t)f.npaths; i++) {
		ring_init(&f.line_fwd[i], pool);
		ring_init(&f.line_rev[i], pool);
	}
	if ((f.fd_fwd = tun_attach(fwd_tun)) < 0 ||
	    (f.fd_rev = tun_attach(rev_tun)) < 0) {
		rc = 1;
		goto out;
	}
	if (channel) {
		f.have_reg = 1;
		if (aqm_lregion_create(&f.reg, "aqm-fwd", shm, se, ve) != 0) {
			rc = 1;
			goto out;
		}
		if (aqm_attach(f.core, f.reg.base, f.reg.size, mono_ns()) !=
		    AQM_OK) {
			fprintf(stderr, "aqm-fwd: core refused the region\n");
			rc = 1;
			goto out;
		}
	}
	if (channel && wait_s > 0)
		aqm_lregion_wait_consumer(&f.reg, wait_s);
	printf("ready\n");
	fflush(stdout);
	f.start_ns = mono_ns();
	start = (double)f.start_ns;
	run(&f, duration);
	aqm_tick(f.core, mono_ns());
	print_report(&f, (mono_ns() - start) / 1e9, json);
	fflush(stdout);
out:
	aqm_detach(f.core);
	if (f.have_reg)
		aqm_lregion_unpublish(&f.reg);
	return (rc);
}
