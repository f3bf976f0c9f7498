/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_lregion.h: a Linux data path's channel region, for user-space hosts.
 *
 * The region as aqm-host makes it (bridge/README.md, "Lifecycle"): a memfd
 * of the region's exact size, mode 0600, sealed against shrinking and
 * growing (nobody, root included, can truncate it under the core or the
 * daemon), holding the producer lock (an OFD write lock on byte 0) for the
 * host's life, and published as /dev/shm/NAME, a link made O_EXCL by
 * symlink(2) to /proc/PID/fd/N, which dies with the host.  And the
 * channel's comeback: after a channel error the core detaches and decides
 * alone; a consumer that attaches since (it bumps consumer_gen) gets the
 * channel back, with the host's own indices made consistent with the
 * consumer's.
 *
 * Used by aqm-fwd (bridge/linux/aqm_fwd.c), which refuses a name already
 * taken (aqm_lregion_create), and by aqm-host (bridge/linux/aqm_host.c),
 * which publishes with its own recovery of a stale name between
 * aqm_lregion_memfd and aqm_lregion_map.  Static inline: include it in one
 * translation unit of a host, after defining AQM_PROG (aqm_lutil.h).
 */

#ifndef AQM_LREGION_H
#define AQM_LREGION_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aqm_core.h"
#include "aqm_lutil.h"		/* mono_ns, stop_requested */

struct aqm_lregion {
	void		*base;
	uint64_t	 size;
	struct aqm_chan	 chan;		/* the host's private view */
	uint32_t	 se, ve;	/* ring sizes */
	uint32_t	 gen_seen;	/* consumer_gen while attached */
	uint64_t	 reattaches;
	int		 fd;
	int		 published;
	char		 path[160];	/* /dev/shm/NAME */
	char		 link_target[64];	/* /proc/PID/fd/N */
};

/* The producer's lock: an OFD write lock on byte 0 (F_OFD_SETLK, F_OFD_GETLK). */
static inline int
aqm_lregion_lock(int fd, int cmd, struct flock *fl)
{

	memset(fl, 0, sizeof(*fl));
	fl->l_type = F_WRLCK;
	fl->l_whence = SEEK_SET;
	fl->l_start = 0;
	fl->l_len = 1;
	return (fcntl(fd, cmd, fl));
}

/* Nothing made yet: the sizes and the name /dev/shm/name. */
static inline void
aqm_lregion_init(struct aqm_lregion *r, const char *name, uint32_t se,
    uint32_t ve)
{

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->se = se;
	r->ve = ve;
	r->size = aqm_chan_region_size(se, ve);
	snprintf(r->path, sizeof(r->path), "/dev/shm/%s", name);
}

/*
 * The sealed memfd of an initialised r, with the producer lock taken;
 * 0, or -1 with the reason on stderr (prefixed by prog).
 */
static inline int
aqm_lregion_memfd(struct aqm_lregion *r, const char *prog, const char *name)
{
	struct flock fl;
	char mname[160];

	snprintf(mname, sizeof(mname), "aqm_llm:%s", name);
	r->fd = memfd_create(mname, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (r->fd < 0 || fchmod(r->fd, 0600) != 0 ||
	    ftruncate(r->fd, (off_t)r->size) != 0 ||
	    fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_SEAL) != 0 || aqm_lregion_lock(r->fd, F_OFD_SETLK,
	    &fl) != 0) {
		fprintf(stderr, "%s: sealed region: %s\n", prog,
		    strerror(errno));
		return (-1);
	}
	snprintf(r->link_target, sizeof(r->link_target), "/proc/%d/fd/%d",
	    (int)getpid(), r->fd);
	return (0);
}

/* Publish the memfd as the link r->path; 0, or -1 with errno (EEXIST). */
static inline int
aqm_lregion_link(struct aqm_lregion *r)
{

	if (symlink(r->link_target, r->path) != 0)
		return (-1);
	r->published = 1;
	return (0);
}

/* Map r->fd and lay the channel out in it; 0, or -1 as above. */
static inline int
aqm_lregion_map(struct aqm_lregion *r, const char *prog)
{

	r->base = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED,
	    r->fd, 0);
	if (r->base == MAP_FAILED) {
		r->base = NULL;
		fprintf(stderr, "%s: mmap: %s\n", prog, strerror(errno));
		return (-1);
	}
	if (aqm_chan_init(&r->chan, r->base, r->size, r->se, r->ve) !=
	    AQM_CHAN_OK) {
		fprintf(stderr, "%s: ring sizes %u/%u refused\n", prog, r->se,
		    r->ve);
		return (-1);
	}
	return (0);
}

/*
 * Make, seal, lock and publish the region /dev/shm/name with rings of se
 * and ve entries; 0, or -1 with the reason on stderr (prefixed by prog).
 * name: 1..100 characters, no '/'.
 */
static inline int
aqm_lregion_create(struct aqm_lregion *r, const char *prog, const char *name,
    uint32_t se, uint32_t ve)
{

	aqm_lregion_init(r, name, se, ve);
	if (aqm_lregion_memfd(r, prog, name) != 0)
		return (-1);
	if (aqm_lregion_link(r) != 0) {
		fprintf(stderr, "%s: %s: %s%s\n", prog, r->path,
		    strerror(errno), errno == EEXIST ? " (the region of a "
		    "running data path, or one a killed one left: remove it if "
		    "none runs)" : "");
		return (-1);
	}
	return (aqm_lregion_map(r, prog));
}

/* Remove the name, unless it now names someone else's region. */
static inline void
aqm_lregion_unpublish(struct aqm_lregion *r)
{
	char target[sizeof(r->link_target)];
	ssize_t n;

	if (!r->published)
		return;
	n = readlink(r->path, target, sizeof(target) - 1);
	if (n > 0) {
		target[n] = '\0';
		if (strcmp(target, r->link_target) == 0)
			(void)unlink(r->path);
	}
	r->published = 0;
}

/*
 * Call now and then (each tick): once the core has detached after a
 * channel error, a consumer that has attached since gets the channel back.
 * Returns 1 when it re-attached the core.
 */
static inline int
aqm_lregion_watch(struct aqm_lregion *r, struct aqm_core *core, uint64_t now,
    const char *prog)
{
	struct aqm_ring_index *ix = r->chan.idx;
	uint32_t gen, sp, sc, vp, vc;
	int rc;

	if (r->base == NULL)
		return (0);
	gen = aqm_load_acquire(&r->chan.hdr->consumer_gen);
	if (core->chan_attached) {
		r->gen_seen = gen;
		return (0);
	}
	if (gen == r->gen_seen)
		return (0);
	r->gen_seen = gen;
	sp = aqm_load_acquire(&ix[AQM_IDX_STATE_PROD].value);
	sc = aqm_load_acquire(&ix[AQM_IDX_STATE_CONS].value);
	if (sp - sc > r->se)
		aqm_store_release(&ix[AQM_IDX_STATE_PROD].value, sc);
	vp = aqm_load_acquire(&ix[AQM_IDX_VERDICT_PROD].value);
	vc = aqm_load_acquire(&ix[AQM_IDX_VERDICT_CONS].value);
	if (vp - vc > r->ve)
		aqm_store_release(&ix[AQM_IDX_VERDICT_CONS].value, vp);
	rc = aqm_attach(core, r->base, r->size, now);
	if (rc == AQM_OK)
		r->reattaches++;
	fprintf(stderr, "%s: a new consumer (generation %u): %s\n", prog, gen,
	    rc == AQM_OK ? "channel re-attached" : "region refused, DualPI2 "
	    "alone");
	return (rc == AQM_OK);
}

/* Up to seconds, until a consumer is up or a signal asks us to stop. */
static inline void
aqm_lregion_wait_consumer(const struct aqm_lregion *r, double seconds)
{
	uint64_t until = mono_ns() + (uint64_t)(seconds * 1e9);

	while (!stop_requested && mono_ns() < until &&
	    !(aqm_load_acquire(&r->chan.hdr->flags) & AQM_CHAN_F_CONSUMER_UP))
		usleep(1000);
}

#endif /* !AQM_LREGION_H */
