/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_core.h: the portable AQM-LLM data path core.
 *
 * DualPI2 (RFC 9332, with the defaults of Linux sch_dualpi2) plus the model
 * hook: every enqueued packet is published as a state record on an attached
 * channel, and at dequeue a verdict that has arrived for it is applied;
 * otherwise DualPI2 decides.  The core never waits for anything.
 *
 * The core owns no packets.  A host (the FreeBSD scheduler, the Linux
 * host, the ns-3 queue disc, the Python wrapper) keeps two FIFO queues and,
 * with each packet, the struct aqm_pkt that aqm_enqueue() filled in.  The
 * calling sequence per packet is:
 *
 *	aqm_enqueue()		-> AQM_V_DROP: free it; else append to queue q
 *	aqm_select()		-> which queue to serve, or AQM_SELECT_NONE
 *	aqm_dequeue()		-> after popping that queue's head: pass, mark
 *				   (set CE) or drop (free it, select again)
 *
 * The host passes time in nanoseconds from a monotonic clock.  No floating
 * point, no allocation, no OS headers, no unbounded loops: the same file
 * runs in the FreeBSD kernel.  Not thread safe: the host serialises calls
 * (dummynet holds its lock).
 */

#ifndef AQM_CORE_H
#define AQM_CORE_H

#include "aqm_channel.h"

/* Verdicts the core returns to its host. */
#define AQM_V_PASS		0	/* enqueue: accepted / dequeue: forward */
#define AQM_V_DROP		1
#define AQM_V_MARK		2	/* dequeue: set CE, then forward */

/* Who decided a dequeue verdict. */
#define AQM_SRC_FALLBACK	0	/* DualPI2 */
#define AQM_SRC_MODEL		1	/* a verdict from the channel */

#define AQM_SELECT_NONE		(-1)

/* Error codes: negative errno-like values, stable across hosts. */
#define AQM_OK			0
#define AQM_EINVAL		(-22)
#define AQM_EBUSY		(-16)

/*
 * Verdict slots: each queue has a ring of AQM_VSLOTS slots, one per packet
 * in the order they were enqueued there; a verdict waits in its packet's
 * slot until the packet leaves.  A queue holds at most AQM_LIMIT_PKTS_MAX
 * packets, so a queued packet's slot is never taken by a newer one, however
 * long the other queue keeps it waiting.
 */
#define AQM_VSLOTS		16384u
#define AQM_LIMIT_PKTS_MAX	(AQM_VSLOTS - 1)
/*
 * aqm_params.harm_budget_pct: what model verdicts may signal beyond
 * DualPI2's own decisions, in percent of DualPI2's own signal (see
 * README.md, "Harm budget").
 */
#define AQM_HARM_BUDGET_DEFAULT	200u
#define AQM_HARM_BUDGET_MAX	1000u
#define AQM_HARM_BUDGET_OFF	0xffffffffu	/* no budget: experiments only */
/* Signals of credit a queue can save up (a burst the budget allows). */
#define AQM_HARM_CREDIT_MAX	8u
/* Verdicts filed per look at the ring; a tick looks up to this many times. */
#ifndef AQM_VERDICT_BURST
#define AQM_VERDICT_BURST	64u
#endif
#define AQM_TICK_BURSTS		64u
/*
 * At attach the core continues its sequence numbers above the last one the
 * region shows as published (a previous instance's), read from untrusted
 * memory and so taken only up to this value.
 */
#define AQM_SEQ_RESUME_MAX	((uint64_t)1 << 62)

/* struct aqm_pkt.flags, set by the core at enqueue. */
#define AQM_PKT_F_NOSTEP	0x1u	/* L queue shorter than min_qlen_step */

/* What a host keeps with each queued packet. */
struct aqm_pkt {
	uint64_t seq;
	uint64_t ts_ns;		/* enqueue time */
	uint32_t len;
	uint8_t	 queue;		/* AQM_QUEUE_* */
	uint8_t	 ecn;		/* AQM_ECN_* at enqueue */
	uint16_t flags;		/* AQM_PKT_F_*: the core's, kept as is */
};
AQM_STATIC_ASSERT(sizeof(struct aqm_pkt) == 24, "aqm_pkt size");

/* A dequeue decision. */
struct aqm_decision {
	uint32_t verdict;	/* AQM_V_PASS, _MARK or _DROP */
	uint32_t source;	/* AQM_SRC_* */
};

/*
 * One queue's verdict slots: slot (i % AQM_VSLOTS) belongs to the i-th
 * packet enqueued there; [head, tail) are the packets still queued, their
 * sequence numbers increasing.
 */
struct aqm_vslot {
	uint64_t seq;		/* packet that owns the slot */
	uint32_t state;		/* AQM_VS_* (private to the core) */
	uint32_t action;
};

struct aqm_vring {
	struct aqm_vslot slot[AQM_VSLOTS];
	uint32_t head;
	uint32_t tail;
};

/*
 * The core's state.  Hosts allocate it (aqm_core_size() bytes, any
 * alignment suitable for uint64_t) and treat it as opaque.
 */
struct aqm_core {
	struct aqm_params	params;
	struct aqm_counters	cnt;

	/* PI controller. */
	uint32_t	prob;			/* p' */
	uint32_t	pad0;
	uint64_t	last_qdelay_ns;
	uint64_t	last_update_ns;
	uint64_t	next_update_ns;
	int64_t		alpha_coef;		/* scaled gains, see .c */
	int64_t		beta_coef;

	/* Queues, as the core sees them through the host's calls. */
	uint32_t	qlen[AQM_NQUEUES];
	uint32_t	qbytes[AQM_NQUEUES];
	uint64_t	head_ts[AQM_NQUEUES];	/* enqueue time of head */
	int64_t		c_credit;		/* WRR classic protection */
	int32_t		w_classic;		/* weights, percent */
	int32_t		w_l4s;

	/* Service rate estimates: the link's, and each queue's drain rate. */
	uint64_t	rate_bps;
	uint64_t	ns_per_kbyte;		/* 1e12 / rate, for deadlines */
	uint64_t	rate_bytes;
	uint64_t	rate_ns;
	uint64_t	last_deq_ns;
	uint32_t	last_deq_len;
	uint32_t	last_deq_busy;		/* backlog left behind it */
	uint64_t	qrate_bps[AQM_NQUEUES];	/* while that queue is busy */
	uint64_t	q_ns_per_kbyte[AQM_NQUEUES];
	uint64_t	qrate_bytes[AQM_NQUEUES];
	uint64_t	qrate_ns[AQM_NQUEUES];
	uint64_t	qlast_deq_ns[AQM_NQUEUES];
	uint32_t	qlast_deq_len[AQM_NQUEUES];
	uint32_t	qlast_busy[AQM_NQUEUES];
	uint32_t	rate_samples;		/* gaps in the first window */
	uint32_t	qrate_samples[AQM_NQUEUES];
	uint32_t	pad2;

	/* Harm budget: signals model verdicts may still add, per queue. */
	uint64_t	harm_credit[AQM_NQUEUES];	/* 1 << 32 = 1 signal */

	uint64_t	next_seq;
	uint64_t	rng;			/* xorshift64* state */
	uint64_t	verdict_delay_ns;	/* see aqm_set_verdict_delay() */

	/* Channel (absent when chan_attached is 0). */
	uint32_t	chan_attached;
	uint32_t	param_ack;		/* last mailbox request served */
	uint32_t	counters_gen;
	uint32_t	pad1;
	struct aqm_chan	chan;
	struct aqm_vring vq[AQM_NQUEUES];
	uint32_t	vhint[AQM_VSLOTS];	/* seq -> queue << 31 | slot */
};

/* Defaults of Linux sch_dualpi2. */
void	aqm_params_default(struct aqm_params *p);
/* AQM_OK or AQM_EINVAL; nothing is changed either way. */
int	aqm_params_validate(const struct aqm_params *p);

uint64_t aqm_core_size(void);
/* Initialise with validated params (NULL: defaults) and a PRNG seed. */
int	aqm_core_init(struct aqm_core *c, const struct aqm_params *p,
	    uint64_t seed, uint64_t now_ns);
/* Change parameters at run time: AQM_EINVAL leaves everything as it was. */
int	aqm_core_set_params(struct aqm_core *c, const struct aqm_params *p);
void	aqm_core_get_params(const struct aqm_core *c, struct aqm_params *p);

/*
 * Enqueue a packet of len bytes with ECN codepoint ecn.  Fills *pkt (the
 * host stores it with the packet).  Returns AQM_V_PASS (append pkt to
 * queue pkt->queue) or AQM_V_DROP (over the limit: free the packet).
 */
int	aqm_enqueue(struct aqm_core *c, uint64_t now_ns, uint32_t len,
	    uint8_t ecn, struct aqm_pkt *pkt);

/* Which queue to pop next (AQM_QUEUE_C or _L), or AQM_SELECT_NONE. */
int	aqm_select(struct aqm_core *c, uint64_t now_ns);

/*
 * The host popped pkt from the head of queue pkt->queue; next_head_ts is
 * the enqueue time of the packet now at that queue's head (ignored when
 * the queue is empty).  Decides what to do with pkt.
 */
void	aqm_dequeue(struct aqm_core *c, uint64_t now_ns,
	    const struct aqm_pkt *pkt, uint64_t next_head_ts,
	    struct aqm_decision *d);

/*
 * Remove a packet without a decision (host flushing a queue): keeps the
 * backlog accounting right.
 */
void	aqm_forget(struct aqm_core *c, const struct aqm_pkt *pkt,
	    uint64_t next_head_ts);

/*
 * Run due PI updates, drain verdicts and serve the parameter mailbox.
 * enqueue and dequeue also run due PI updates, so a host without a timer
 * loses nothing but the updates of idle periods, which it catches up
 * (boundedly) at the next packet.
 */
void	aqm_tick(struct aqm_core *c, uint64_t now_ns);

/*
 * Attach a channel region laid out by aqm_chan_init() (kernel, Linux host)
 * or validated by aqm_chan_open().  Returns AQM_OK or an AQM_CHAN_E* code.
 */
int	aqm_attach(struct aqm_core *c, void *region, uint64_t size,
	    uint64_t now_ns);
void	aqm_detach(struct aqm_core *c);

/*
 * Simulation hosts: collect the verdicts waiting in the ring now (up to
 * AQM_VERDICT_BURST; returns how many were waiting), and tell whether the
 * verdict of packet seq has arrived.  A simulator whose time must wait for
 * the model uses them; a real data path never waits.
 */
int64_t	aqm_collect_verdicts(struct aqm_core *c);
int	aqm_verdict_ready(const struct aqm_core *c, uint64_t seq);
/*
 * Emulate an inference latency: a verdict is applied only to a packet that
 * stayed at least ns in the queue, as if it had taken that long to arrive;
 * otherwise it counts as late and DualPI2 decides.  0 (the default) applies
 * every verdict that is there.
 */
void	aqm_set_verdict_delay(struct aqm_core *c, uint64_t ns);

/* p', and p_C and p_CL derived from it. */
uint32_t aqm_prob_base(const struct aqm_core *c);
uint32_t aqm_prob_c(const struct aqm_core *c);
uint32_t aqm_prob_cl(const struct aqm_core *c);

/* Copy the counters out; publish them to the channel's control block. */
void	aqm_counters_get(const struct aqm_core *c, struct aqm_counters *out);
void	aqm_counters_publish(struct aqm_core *c, uint64_t now_ns);

/*
 * Sizes and offsets of every ABI struct, for bindings that must lay out the
 * same records (the Python dtypes are checked against these).  Writes up to
 * max pairs (name, value) and returns how many exist.
 */
struct aqm_abi_entry {
	const char	*name;
	uint64_t	 value;
};
uint32_t aqm_abi_describe(struct aqm_abi_entry *out, uint32_t max);

#endif /* !AQM_CORE_H */
