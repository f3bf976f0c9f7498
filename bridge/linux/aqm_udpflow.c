/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm-udpflow: a UDP flow that sends ECT(1) and reacts to CE, and its echo.
 *
 * The kernel's TCP on the development machines has no DCTCP or Prague, and
 * a TCP socket cannot set its ECN bits through IP_TOS, so nothing there
 * sends ECT(1).  This small sender does, to exercise the L queue with real
 * packets: it is not TCP.  Modes:
 *
 *	echo	   answer every datagram with its sequence number, timestamp
 *		   and the ECN codepoint it arrived with (IP_RECVTOS /
 *		   IPV6_RECVTCLASS); at SIGTERM print the counts as JSON
 *	scalable   a window of datagrams in flight, sent with IP_TOS --tos
 *		   (1: ECT(1)), with DCTCP's congestion control (RFC 8257):
 *		   alpha, the moving average (gain 1/16, starting at 1) of the
 *		   fraction of echoes per window that carry CE; at most once
 *		   per window a CE echo cuts the window by alpha/2 (so the
 *		   first one, in slow start, halves it); each other echo adds
 *		   one packet per window (one per echo below the slow-start
 *		   threshold); a loss (a datagram unanswered while three later
 *		   ones were answered, or a silence of --rto-ms) halves it
 *		   once per round trip.  Datagrams are paced at 1.25
 *		   windows per smoothed round trip (none before the first
 *		   answer), as Prague paces, so that the window does not
 *		   leave in one burst that the step threshold marks.
 *	probe	   one datagram every --interval-ms, the RTT of each answer
 *		   (a ping through the bottleneck, in the queue --tos picks)
 *
 * Round trips are measured between kernel timestamps (SO_TIMESTAMPNS) less
 * the time the echo held the datagram, so that neither process's wake-up
 * delay counts: what is left is the network's, the queues' and the
 * forwarder's.
 *
 * The senders print one JSON report at the end of --duration.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define AQM_PROG	"aqm-udpflow"
#include "aqm_lutil.h"

#define MAGIC		0x41514d55u	/* "AQMU" */
#define PAYLOAD		1400
#define WIN_MAX		16384u		/* ring of outstanding datagrams */
#define RTT_CAP		(1u << 20)
#define CWND_EVERY_NS	100000000ull	/* window samples in the report */
#define CWND_SAMPLES	4096

struct hdr {
	uint32_t magic;
	uint8_t	 ecn;			/* echo: codepoint it arrived with */
	uint8_t	 pad[3];
	uint64_t seq;
	uint64_t ts_ns;			/* sender's monotonic clock */
	uint64_t sent_rt_ns;		/* sender's CLOCK_REALTIME at send */
	uint64_t dwell_ns;		/* echo: its kernel's arrival to reply */
};

static uint64_t
real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

/* The kernel's arrival time (CLOCK_REALTIME) of a received message, or 0. */
static uint64_t
rx_stamp(struct msghdr *mh)
{
	struct cmsghdr *cm;
	struct timespec ts;

	for (cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm))
		if (cm->cmsg_level == SOL_SOCKET &&
		    cm->cmsg_type == SCM_TIMESTAMPNS) {
			memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
			return ((uint64_t)ts.tv_sec * 1000000000ull +
			    (uint64_t)ts.tv_nsec);
		}
	return (0);
}

static void
die(const char *what)
{

	fprintf(stderr, "aqm-udpflow: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double
pct_ms(uint32_t *v, uint64_t n, double pct)
{

	if (n == 0)
		return (0);
	return (v[(uint64_t)(pct / 100 * (double)(n - 1) + 0.5)] / 1e3);
}

/* -- echo ------------------------------------------------------------------- */

static int
run_echo(int port)
{
	struct sockaddr_in6 sa, from;
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cm;
	union {
		char buf[CMSG_SPACE(sizeof(int)) * 2 +
		    CMSG_SPACE(sizeof(struct timespec))];
		struct cmsghdr align;
	} ctl;
	uint64_t rx;
	char buf[2048];
	uint64_t count[4] = { 0, 0, 0, 0 };
	struct hdr *h = (struct hdr *)buf;
	int fd, on = 1, off = 0, ecn;
	ssize_t n;

	fd = socket(AF_INET6, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
	(void)setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &on, sizeof(on));
	(void)setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &on, sizeof(on));
	(void)setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
	memset(&sa, 0, sizeof(sa));
	sa.sin6_family = AF_INET6;
	sa.sin6_port = htons((uint16_t)port);
	sa.sin6_addr = in6addr_any;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die("bind");
	printf("ready\n");
	fflush(stdout);
	while (!stop_requested) {
		memset(&mh, 0, sizeof(mh));
		iov.iov_base = buf;
		iov.iov_len = sizeof(buf);
		mh.msg_name = &from;
		mh.msg_namelen = sizeof(from);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(fd, &mh, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("recvmsg");
		}
		if (n < (ssize_t)sizeof(*h) || h->magic != MAGIC)
			continue;
		ecn = 0;
		for (cm = CMSG_FIRSTHDR(&mh); cm != NULL;
		    cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level == IPPROTO_IP &&
			    cm->cmsg_type == IP_TOS)
				ecn = *(uint8_t *)CMSG_DATA(cm) & 3;
			else if (cm->cmsg_level == IPPROTO_IPV6 &&
			    cm->cmsg_type == IPV6_TCLASS)
				ecn = *(int *)CMSG_DATA(cm) & 3;
		}
		count[ecn]++;
		h->ecn = (uint8_t)ecn;
		rx = rx_stamp(&mh);
		h->dwell_ns = rx != 0 && real_ns() > rx ? real_ns() - rx : 0;
		(void)sendto(fd, buf, sizeof(*h), 0, (struct sockaddr *)&from,
		    mh.msg_namelen);
	}
	printf("{\"received\": %" PRIu64 ", \"not_ect\": %" PRIu64
	    ", \"ect1\": %" PRIu64 ", \"ect0\": %" PRIu64 ", \"ce\": %" PRIu64
	    "}\n", count[0] + count[1] + count[2] + count[3], count[0],
	    count[1], count[2], count[3]);
	return (0);
}

/* -- senders ---------------------------------------------------------------- */

struct out {
	uint64_t ts_ns;		/* 0: answered or given up */
};

struct sender {
	int	 fd;
	int	 scalable;
	double	 cwnd, ssthresh, cwnd_max;
	uint64_t next_seq, lowest, inflight;
	uint64_t sent, acked, ce, lost, bytes_acked;
	uint64_t no_cut_until, last_ack_ns, srtt_ns, rto_ns, next_send_ns;
	double	 alpha;			/* DCTCP's estimate of the marked share */
	uint64_t win_end, win_acks, win_ce;	/* the window being measured */
	uint64_t ce_cut_end;		/* no CE cut before this is answered */
	struct out win[WIN_MAX];
	uint32_t *rtt_us;
	uint64_t nrtt;
	float	 cwnd_log[CWND_SAMPLES];
	uint32_t ncwnd;
	double	 cwnd_first_ce;
};

static void
snd_cut(struct sender *s, uint64_t now)
{

	if (now < s->no_cut_until)
		return;
	s->cwnd = fmax(2.0, s->cwnd / 2);
	s->ssthresh = s->cwnd;
	s->no_cut_until = now + (s->srtt_ns ? s->srtt_ns : 10000000ull);
}

/* Give up on outstanding datagrams below seq (all of them: UINT64_MAX). */
static void
snd_lose_below(struct sender *s, uint64_t seq, uint64_t now)
{
	int lost = 0;

	while (s->lowest < s->next_seq && s->lowest < seq) {
		if (s->win[s->lowest % WIN_MAX].ts_ns != 0) {
			s->win[s->lowest % WIN_MAX].ts_ns = 0;
			s->inflight--;
			s->lost++;
			lost = 1;
		}
		s->lowest++;
	}
	if (lost && s->scalable)
		snd_cut(s, now);
}

static void
snd_on_echo(struct sender *s, const struct hdr *h, uint64_t now,
    uint64_t rx_rt)
{
	struct out *o;
	uint64_t rtt;

	if (h->seq < s->lowest || h->seq >= s->next_seq)
		return;
	o = &s->win[h->seq % WIN_MAX];
	if (o->ts_ns == 0)
		return;			/* given up on already */
	o->ts_ns = 0;
	s->inflight--;
	s->acked++;
	s->bytes_acked += PAYLOAD;
	s->last_ack_ns = now;
	/* Kernel arrival less send time less the echo's hold; else by hand. */
	if (rx_rt > h->sent_rt_ns + h->dwell_ns)
		rtt = rx_rt - h->sent_rt_ns - h->dwell_ns;
	else
		rtt = now - h->ts_ns;
	if (s->nrtt < RTT_CAP)
		s->rtt_us[s->nrtt] = (uint32_t)(rtt / 1000);
	s->nrtt++;
	s->srtt_ns = s->srtt_ns ? (7 * s->srtt_ns + rtt) / 8 : rtt;
	if (!s->scalable)
		return;
	s->win_acks++;
	s->win_ce += h->ecn == 3;
	if (h->seq >= s->win_end) {
		/* A window answered: fold its marked share into alpha. */
		s->alpha += ((double)s->win_ce / (double)s->win_acks -
		    s->alpha) / 16;
		s->win_acks = s->win_ce = 0;
		s->win_end = s->next_seq;
	}
	if (h->ecn == 3) {
		if (s->ce++ == 0)
			s->cwnd_first_ce = s->cwnd;
		if (h->seq >= s->ce_cut_end) {
			s->cwnd = fmax(2.0, s->cwnd * (1 - s->alpha / 2));
			s->ssthresh = s->cwnd;
			s->ce_cut_end = s->next_seq;
		}
	} else
		s->cwnd += s->cwnd < s->ssthresh ? 1.0 : 1.0 / s->cwnd;
	if (s->cwnd > WIN_MAX - 1)
		s->cwnd = WIN_MAX - 1;
	if (s->cwnd > s->cwnd_max)
		s->cwnd_max = s->cwnd;
	/* Three answered above one that is not: that one is lost. */
	if (h->seq >= 3)
		snd_lose_below(s, h->seq - 2, now);
}

static void
snd_send(struct sender *s, uint64_t now)
{
	char buf[PAYLOAD];
	struct hdr *h = (struct hdr *)buf;

	memset(buf, 0, sizeof(buf));
	h->magic = MAGIC;
	h->seq = s->next_seq;
	h->ts_ns = now;
	h->sent_rt_ns = real_ns();
	if (send(s->fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		return;			/* the stack's queue is full: later */
	s->win[s->next_seq % WIN_MAX].ts_ns = now;
	s->next_seq++;
	s->inflight++;
	s->sent++;
}

static int
run_sender(const char *dst, int port, double duration, int tos,
    double interval_ms, int scalable, double rto_ms)
{
	struct sockaddr_storage sa;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&sa;
	struct pollfd pfd;
	struct timespec ts;
	struct msghdr mh;
	struct iovec iov;
	union {
		char buf[CMSG_SPACE(sizeof(struct timespec))];
		struct cmsghdr align;
	} ctl;
	struct hdr h;
	struct sender *s;
	uint64_t start, end, now, next_probe, next_log, wake;
	socklen_t salen;
	double wall;
	int v6;
	ssize_t n;

	s = calloc(1, sizeof(*s));
	if (s == NULL || (s->rtt_us = calloc(RTT_CAP, sizeof(uint32_t))) ==
	    NULL)
		die("calloc");
	memset(&sa, 0, sizeof(sa));
	if (inet_pton(AF_INET, dst, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		salen = sizeof(*s4);
		v6 = 0;
	} else if (inet_pton(AF_INET6, dst, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		salen = sizeof(*s6);
		v6 = 1;
	} else {
		fprintf(stderr, "aqm-udpflow: --dst %s: not an address\n", dst);
		return (2);
	}
	s->fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, 0);
	if (s->fd < 0)
		die("socket");
	if ((v6 ? setsockopt(s->fd, IPPROTO_IPV6, IPV6_TCLASS, &tos,
	    sizeof(tos)) : setsockopt(s->fd, IPPROTO_IP, IP_TOS, &tos,
	    sizeof(tos))) != 0)
		die("IP_TOS");
	if (connect(s->fd, (struct sockaddr *)&sa, salen) != 0)
		die("connect");
	(void)setsockopt(s->fd, SOL_SOCKET, SO_TIMESTAMPNS, &(int){ 1 },
	    sizeof(int));
	s->scalable = scalable;
	s->cwnd = 10;
	s->ssthresh = 1e9;
	s->alpha = 1;
	s->rto_ns = (uint64_t)(rto_ms * 1e6);
	pfd.fd = s->fd;
	pfd.events = POLLIN;
	start = now = mono_ns();
	end = start + (uint64_t)(duration * 1e9);
	next_probe = next_log = start;
	s->last_ack_ns = start;
	while (!stop_requested && (now = mono_ns()) < end) {
		if (scalable) {
			while (s->inflight < (uint64_t)s->cwnd &&
			    s->next_seq - s->lowest < WIN_MAX - 1 &&
			    now >= s->next_send_ns) {
				uint64_t before = s->sent;

				snd_send(s, now);
				if (s->sent == before)
					break;
				if (s->srtt_ns != 0)
					s->next_send_ns = (s->next_send_ns >
					    now - s->srtt_ns ? s->next_send_ns :
					    now) + (uint64_t)((double)s->srtt_ns /
					    (1.25 * s->cwnd));
			}
			if (s->inflight > 0 && now - s->last_ack_ns > s->rto_ns) {
				snd_lose_below(s, UINT64_MAX, now);
				s->cwnd = 2;
				s->last_ack_ns = now;
			}
			if (now >= next_log && s->ncwnd < CWND_SAMPLES) {
				s->cwnd_log[s->ncwnd++] = (float)s->cwnd;
				next_log += CWND_EVERY_NS;
			}
			wake = s->inflight < (uint64_t)s->cwnd &&
			    s->next_send_ns > now ? s->next_send_ns :
			    now + 5000000ull;
		} else {
			if (now >= next_probe) {
				snd_send(s, now);
				next_probe += (uint64_t)(interval_ms * 1e6);
			}
			wake = next_probe;
		}
		if (wake > end)
			wake = end;
		ts.tv_sec = (time_t)((wake > now ? wake - now : 0) /
		    1000000000ull);
		ts.tv_nsec = (long)((wake > now ? wake - now : 0) %
		    1000000000ull);
		if (ppoll(&pfd, 1, &ts, NULL) <= 0)
			continue;
		for (;;) {
			memset(&mh, 0, sizeof(mh));
			iov.iov_base = &h;
			iov.iov_len = sizeof(h);
			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = ctl.buf;
			mh.msg_controllen = sizeof(ctl.buf);
			n = recvmsg(s->fd, &mh, MSG_DONTWAIT);
			if (n != (ssize_t)sizeof(h))
				break;
			if (h.magic == MAGIC)
				snd_on_echo(s, &h, mono_ns(), rx_stamp(&mh));
		}
	}
	wall = (mono_ns() - start) / 1e9;
	qsort(s->rtt_us, s->nrtt < RTT_CAP ? s->nrtt : RTT_CAP,
	    sizeof(uint32_t), cmp_u32);
	n = (ssize_t)(s->nrtt < RTT_CAP ? s->nrtt : RTT_CAP);
	printf("{\"mode\": \"%s\", \"tos\": %d, \"wall_s\": %.3f, \"sent\": %"
	    PRIu64 ", \"echoed\": %" PRIu64 ", \"ce_echoed\": %" PRIu64
	    ", \"lost\": %" PRIu64 ", \"goodput_mbps\": %.3f, "
	    "\"rtt_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
	    "\"min\": %.3f, \"max\": %.3f}", scalable ? "scalable" : "probe",
	    tos, wall, s->sent, s->acked, s->ce, s->lost,
	    s->bytes_acked * 8 / wall / 1e6, pct_ms(s->rtt_us, (uint64_t)n, 50),
	    pct_ms(s->rtt_us, (uint64_t)n, 90), pct_ms(s->rtt_us, (uint64_t)n, 99),
	    pct_ms(s->rtt_us, (uint64_t)n, 0), pct_ms(s->rtt_us, (uint64_t)n,
	    100));
	if (scalable) {
		uint32_t i;

		printf(", \"cwnd_max\": %.2f, \"cwnd_at_first_ce\": %.2f, "
		    "\"alpha\": %.4f, \"cwnd\": [", s->cwnd_max,
		    s->cwnd_first_ce, s->alpha);
		for (i = 0; i < s->ncwnd; i++)
			printf("%s%.2f", i ? ", " : "", s->cwnd_log[i]);
		printf("]");
	}
	printf("}\n");
	return (0);
}

static void
usage(void)
{

	fprintf(stderr,
	    "usage: aqm-udpflow echo [--port P]\n"
	    "       aqm-udpflow scalable|probe --dst ADDR [--port P]\n"
	    "           [--duration S] [--tos T] [--interval-ms MS]"
	    " [--rto-ms MS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dst", required_argument, NULL, 'd' },
		{ "port", required_argument, NULL, 'p' },
		{ "duration", required_argument, NULL, 't' },
		{ "tos", required_argument, NULL, 'T' },
		{ "interval-ms", required_argument, NULL, 'i' },
		{ "rto-ms", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 }
	};
	struct sigaction sa;
	const char *mode, *dst = NULL;
	double duration = 5, interval = 10, rto = 200;
	int ch, port = 5301, tos = 1;

	if (argc < 2)
		usage();
	mode = argv[1];
	optind = 2;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'd': dst = optarg; break;
		case 'p': port = (int)num_arg("port", optarg, 1, 65535); break;
		case 't': duration = num_arg("duration", optarg, 0, 86400);
		    break;
		case 'T': tos = (int)num_arg("tos", optarg, 0, 255); break;
		case 'i': interval = num_arg("interval-ms", optarg, 0.1, 60000);
		    break;
		case 'r': rto = num_arg("rto-ms", optarg, 1, 60000); break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;	/* no SA_RESTART: recvmsg returns */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (strcmp(mode, "echo") == 0)
		return (run_echo(port));
	if (dst == NULL)
		usage();
	if (strcmp(mode, "scalable") == 0)
		return (run_sender(dst, port, duration, tos, interval, 1, rto));
	if (strcmp(mode, "probe") == 0)
		return (run_sender(dst, port, duration, tos, interval, 0, rto));
	usage();
	return (2);
}
