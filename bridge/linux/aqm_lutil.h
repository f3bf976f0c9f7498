/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_lutil.h: what the Linux user-space programs (aqm-host, aqm-fwd,
 * aqm-udpflow) share: the stop flag their signal handler sets, the
 * monotonic clock in ns, allocation that exits on failure, numeric options
 * in a range, and the order of uint32_t for qsort.
 *
 * Define AQM_PROG (the program's name, for its messages) before including
 * it, in one translation unit of a program.
 */

#ifndef AQM_LUTIL_H
#define AQM_LUTIL_H

#ifndef AQM_PROG
#error "define AQM_PROG before including aqm_lutil.h"
#endif

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The signal that asked the program to stop; 0 while none has. */
static volatile sig_atomic_t stop_requested;

static inline void
on_signal(int sig)
{

	stop_requested = sig;
}

static inline uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

static inline void *
xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);

	if (p == NULL) {
		fprintf(stderr, AQM_PROG ": out of memory\n");
		exit(1);
	}
	return (p);
}

/* The number s of option --opt, or exit 2 unless it is in [lo, hi]. */
static inline double
num_arg(const char *opt, const char *s, double lo, double hi)
{
	char *end;
	double v = strtod(s, &end);

	if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
		fprintf(stderr, AQM_PROG ": --%s %s: want a number in [%g, "
		    "%g]\n", opt, s, lo, hi);
		exit(2);
	}
	return (v);
}

static inline int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x < y ? -1 : x > y);
}

#endif /* !AQM_LUTIL_H */
