/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_dn_compat.h: what aqm_llm uses of dummynet's private scheduler API.
 *
 * Dummynet's scheduler interface (dn_sched.h, ip_dn_private.h) is not an
 * installed header: a module is normally built inside the source tree.  These
 * declarations are written from that documented interface, for the
 * compile-check CI runs against the installed FreeBSD 14 headers and for
 * building outside /usr/src.  With the source tree present, build with
 * -DAQM_LLM_WITH_SRC to use the real headers instead.
 *
 * Layouts must match the running kernel's: the scheduler's private area is
 * allocated right after struct dn_sch_inst, so every field below is in the
 * kernel's order and type (NEW_AQM, as ip_dummynet.h defines it).
 */

#ifndef AQM_DN_COMPAT_H
#define AQM_DN_COMPAT_H

#ifdef AQM_LLM_WITH_SRC
#include <netpfil/ipfw/ip_dn_private.h>
#include <netpfil/ipfw/dn_sched.h>
#else

#define	DN_MULTIQUEUE	0x01

struct mq {
	struct mbuf	*head;
	struct mbuf	*tail;
	int		 count;
};

struct delay_line {
	struct dn_id	 oid;
	struct dn_sch_inst *si;
	struct mq	 mq;
};

struct dn_schk;
struct dn_fsk;
struct dn_queue;

struct dn_sch_inst {
	struct dn_flow	 ni;
	SLIST_ENTRY(dn_sch_inst) si_next;
	struct delay_line dline;
	struct dn_schk	*sched;
	int		 kflags;
	int64_t		 credit;
	uint64_t	 sched_time;
	uint64_t	 idle_time;
	int		 q_count;
};

/* The head of struct dn_schk: the user's configuration comes first. */
struct dn_schk {
	struct dn_sch	 sch;
};

struct dn_alg {
	uint32_t	 type;
	const char	*name;
	uint32_t	 flags;
	size_t		 schk_datalen;
	size_t		 si_datalen;
	size_t		 q_datalen;
	int		(*enqueue)(struct dn_sch_inst *, struct dn_queue *,
			    struct mbuf *);
	struct mbuf	*(*dequeue)(struct dn_sch_inst *);
	int		(*config)(struct dn_schk *);
	int		(*destroy)(struct dn_schk *);
	int		(*new_sched)(struct dn_sch_inst *);
	int		(*free_sched)(struct dn_sch_inst *);
	int		(*new_fsk)(struct dn_fsk *);
	int		(*free_fsk)(struct dn_fsk *);
	int		(*new_queue)(struct dn_queue *);
	int		(*free_queue)(struct dn_queue *);
	int		(*getconfig)(struct dn_schk *, struct dn_extra_parms *);
	int		 ref_count;
	SLIST_ENTRY(dn_alg) next;
};

/* Exported by dummynet.ko. */
int	dn_sched_modevent(module_t, int, void *);
int	ecn_mark(struct mbuf *);

#endif /* !AQM_LLM_WITH_SRC */
#endif /* !AQM_DN_COMPAT_H */
