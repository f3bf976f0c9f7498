/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_dn_compat.h: the part of dummynet's private scheduler interface that
 * aqm_llm uses, for builds without a FreeBSD source tree (CI's cross
 * compile, and the user-space harness of tests/freebsd).
 *
 * With the source tree, aqm_llm_os.h includes dummynet's own headers and
 * only the assertions at the end of this file are used, on them.  Without
 * it, the declarations below stand in for them, so they must lay memory
 * out exactly as the kernel does: dummynet
 * allocates the scheduler's private area right after struct dn_sch_inst,
 * reads a struct dn_queue at its start (single-queue schedulers), links
 * struct dn_alg into its scheduler list, and reads struct dn_pkt_tag.
 * Every size and offset the module relies on is asserted below for amd64
 * (LP64), with the values computed from FreeBSD 14's headers as read at
 * these freebsd-src blobs (the 14 era: VNET dn_cfg, CK_LIST dn_alg,
 * m_rcvif_restore() in dn_dequeue(), SI_SUB_PROTO_FIREWALL):
 *
 *	sys/netpfil/ipfw/dn_sched.h		commit ba0fe1ddeff5
 *	sys/netpfil/ipfw/ip_dn_private.h	commit 2de4e57535e3
 *	sys/netpfil/ipfw/ip_dummynet.c		commit 55351c2620c5
 *	sys/netpfil/ipfw/dn_sched_fifo.c	commit 2ff63af9b88c
 *	sys/netpfil/ipfw/dn_sched_fq_codel.c	commit fe3bcfbda30e
 *	sys/netpfil/ipfw/ip_fw_private.h	(14 era: IP_FW_NAT64, no ro_or)
 *	sys/contrib/ck/include/ck_queue.h	(CK_LIST_ENTRY: two pointers)
 *
 * The public types (struct dn_id, dn_flow, dn_sch, dn_fs, ipfw_flow_id)
 * come from the installed <netinet/ip_dummynet.h> and <netinet/ip_fw.h>;
 * their sizes are asserted too.  struct ipfw_rule_ref is declared here:
 * <netinet/ip_var.h> needs ck_epoch.h in a kernel build, which only the
 * source tree has.
 * NEW_AQM is always defined by <netinet/ip_dummynet.h>, so the NEW_AQM
 * fields (dn_alg.getconfig, dn_queue.aqm_status, dn_fsk.aqmfp) are here.
 */

#ifndef AQM_DN_COMPAT_H
#define AQM_DN_COMPAT_H

#ifndef AQM_LLM_WITH_SRC
#ifndef NEW_AQM
#error "<netinet/ip_dummynet.h> defines NEW_AQM on FreeBSD 14"
#endif

#define	DN_MULTIQUEUE	0x01

/* ck_queue.h's CK_LIST_ENTRY: next pointer, then pointer to previous next. */
#define	AQM_DN_CK_LIST_ENTRY(type)					\
	struct {							\
		struct type	*cle_next;				\
		struct type	**cle_prev;				\
	}

struct dn_alg;
struct dn_aqm;
struct dn_extra_parms;
struct dn_ht;
struct dn_profile;
struct dn_queue;
struct dn_sch_inst;
struct dn_schk;
struct ifnet;
struct ip6_moptions;
struct ip6_pktopts;

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

/* The kernel side of a flowset (only its layout matters to the module). */
struct dn_fsk {
	struct dn_fs	 fs;
	SLIST_ENTRY(dn_fsk) fsk_next;
	struct ipfw_flow_id fsk_mask;
	struct dn_ht	*qht;
	struct dn_schk	*sched;
	SLIST_ENTRY(dn_fsk) sch_chain;
	int		 drain_bucket;
	int		 w_q;
	int		 max_th;
	int		 min_th;
	int		 max_p;
	u_int		 c_1;
	u_int		 c_2;
	u_int		 c_3;
	u_int		 c_4;
	u_int		*w_q_lookup;
	u_int		 lookup_depth;
	int		 lookup_step;
	int		 lookup_weight;
	int		 avg_pkt_size;
	int		 max_pkt_size;
	struct dn_aqm	*aqmfp;
	void		*aqmcfg;
};

/* A queue: what dummynet reads at (si + 1) for a single-queue scheduler. */
struct dn_queue {
	struct dn_flow	 ni;
	struct mq	 mq;
	struct dn_sch_inst *_si;
	SLIST_ENTRY(dn_queue) q_next;
	struct dn_fsk	*fs;
	int		 avg;
	int		 count;
	int		 random;
	uint64_t	 q_time;
	void		*aqm_status;
};

/* The kernel side of a scheduler; its private area (schk_datalen) follows. */
struct dn_schk {
	struct dn_sch	 sch;
	struct dn_alg	*fp;
	struct dn_link	 link;
	struct dn_profile *profile;
	struct dn_id	*cfg;
	SLIST_ENTRY(dn_schk) schk_next;
	SLIST_HEAD(, dn_fsk) fsk_list;
	struct dn_fsk	*fs;
	int		 drain_bucket;
	struct dn_ht	*siht;
};

/* A scheduler instance; its private area (si_datalen) follows. */
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

/* A scheduler's descriptor, linked into dummynet's CK_LIST of them. */
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
	AQM_DN_CK_LIST_ENTRY(dn_alg) next;
};

/* <netinet/ip_var.h>: where ipfw resumes, at the head of dummynet's tag. */
struct ipfw_rule_ref {
	uint32_t	 slot;
	uint32_t	 rulenum;
	uint32_t	 rule_id;
	uint32_t	 chain_id;
	uint32_t	 info;
	uint32_t	 pkt_mark;
	uint32_t	 spare[2];
};

/* ip_fw_private.h: ip6_output arguments a tag carries. */
struct _ip6dn_args {
	struct ip6_pktopts *opt_or;
	int		 flags_or;
	struct ip6_moptions *im6o_or;
	struct ifnet	*origifp_or;
	struct ifnet	*ifp_or;
	struct sockaddr_in6 dst_or;
	u_long		 mtu_or;
};

/* The first mbuf tag of every packet in dummynet (PACKET_TAG_DUMMYNET). */
struct dn_pkt_tag {
	struct ipfw_rule_ref rule;
	int		 dn_dir;
	uint64_t	 output_time;
	struct ifnet	*ifp;
	struct _ip6dn_args ip6opt;
	uint16_t	 iphdr_off;
};

/* Exported by dummynet.ko. */
int	dn_sched_modevent(module_t, int, void *);
int	ecn_mark(struct mbuf *);
struct dn_pkt_tag *dn_tag_get(struct mbuf *);
#endif /* !AQM_LLM_WITH_SRC */

/*
 * Checked against the declarations above, and, in a build with the source
 * tree, against dummynet's own headers.
 */
#if defined(__x86_64__) || defined(__amd64__)
#define	AQM_DN_ASSERT(e, what)	_Static_assert(e, "amd64 layout: " what)
#define	AQM_DN_OFFSET(s, f, off)						\
	AQM_DN_ASSERT(__offsetof(struct s, f) == (off), #s "." #f)
/* Public headers. */
AQM_DN_ASSERT(sizeof(struct dn_id) == 8, "dn_id");
AQM_DN_OFFSET(dn_id, len, 0);
AQM_DN_OFFSET(dn_id, type, 2);
AQM_DN_OFFSET(dn_id, subtype, 3);
AQM_DN_OFFSET(dn_id, id, 4);
AQM_DN_ASSERT(sizeof(struct ipfw_flow_id) == 56, "ipfw_flow_id");
AQM_DN_ASSERT(sizeof(struct dn_flow) == 96, "dn_flow");
AQM_DN_OFFSET(dn_flow, oid, 0);
AQM_DN_OFFSET(dn_flow, fid, 8);
AQM_DN_OFFSET(dn_flow, tot_pkts, 64);
AQM_DN_OFFSET(dn_flow, tot_bytes, 72);
AQM_DN_OFFSET(dn_flow, length, 80);
AQM_DN_OFFSET(dn_flow, len_bytes, 84);
AQM_DN_OFFSET(dn_flow, drops, 88);
AQM_DN_ASSERT(sizeof(struct dn_sch) == 92, "dn_sch");
AQM_DN_OFFSET(dn_sch, oid, 0);
AQM_DN_OFFSET(dn_sch, sched_nr, 8);
AQM_DN_ASSERT(sizeof(struct dn_link) == 32, "dn_link");
AQM_DN_ASSERT(sizeof(struct dn_fs) == 120, "dn_fs");
AQM_DN_ASSERT(sizeof(struct ipfw_rule_ref) == 32, "ipfw_rule_ref");
/* Private headers, declared above. */
AQM_DN_ASSERT(sizeof(struct mq) == 24, "mq");
AQM_DN_OFFSET(mq, head, 0);
AQM_DN_OFFSET(mq, tail, 8);
AQM_DN_OFFSET(mq, count, 16);
AQM_DN_ASSERT(sizeof(struct delay_line) == 40, "delay_line");
AQM_DN_OFFSET(delay_line, mq, 16);
AQM_DN_ASSERT(sizeof(struct dn_queue) == 176, "dn_queue");
AQM_DN_OFFSET(dn_queue, ni, 0);
AQM_DN_OFFSET(dn_queue, mq, 96);
AQM_DN_OFFSET(dn_queue, _si, 120);
AQM_DN_OFFSET(dn_queue, fs, 136);
AQM_DN_OFFSET(dn_queue, q_time, 160);
AQM_DN_OFFSET(dn_queue, aqm_status, 168);
AQM_DN_ASSERT(sizeof(struct dn_sch_inst) == 192, "dn_sch_inst");
AQM_DN_OFFSET(dn_sch_inst, ni, 0);
AQM_DN_OFFSET(dn_sch_inst, dline, 104);
AQM_DN_OFFSET(dn_sch_inst, sched, 144);
AQM_DN_OFFSET(dn_sch_inst, kflags, 152);
AQM_DN_OFFSET(dn_sch_inst, q_count, 184);
AQM_DN_ASSERT(sizeof(struct dn_schk) == 192, "dn_schk");
AQM_DN_OFFSET(dn_schk, sch, 0);
AQM_DN_OFFSET(dn_schk, fp, 96);
AQM_DN_OFFSET(dn_schk, fs, 168);
AQM_DN_OFFSET(dn_schk, siht, 184);
AQM_DN_ASSERT(sizeof(struct dn_fsk) == 296, "dn_fsk");
AQM_DN_OFFSET(dn_fsk, fs, 0);
AQM_DN_OFFSET(dn_fsk, sched, 192);
AQM_DN_OFFSET(dn_fsk, aqmfp, 280);
/* Dummynet reads every field of the descriptor the module initialises. */
AQM_DN_ASSERT(sizeof(struct dn_alg) == 160, "dn_alg");
AQM_DN_OFFSET(dn_alg, type, 0);
AQM_DN_OFFSET(dn_alg, name, 8);
AQM_DN_OFFSET(dn_alg, flags, 16);
AQM_DN_OFFSET(dn_alg, schk_datalen, 24);
AQM_DN_OFFSET(dn_alg, si_datalen, 32);
AQM_DN_OFFSET(dn_alg, q_datalen, 40);
AQM_DN_OFFSET(dn_alg, enqueue, 48);
AQM_DN_OFFSET(dn_alg, dequeue, 56);
AQM_DN_OFFSET(dn_alg, config, 64);
AQM_DN_OFFSET(dn_alg, destroy, 72);
AQM_DN_OFFSET(dn_alg, new_sched, 80);
AQM_DN_OFFSET(dn_alg, free_sched, 88);
AQM_DN_OFFSET(dn_alg, new_fsk, 96);
AQM_DN_OFFSET(dn_alg, free_fsk, 104);
AQM_DN_OFFSET(dn_alg, new_queue, 112);
AQM_DN_OFFSET(dn_alg, free_queue, 120);
AQM_DN_OFFSET(dn_alg, getconfig, 128);
AQM_DN_OFFSET(dn_alg, ref_count, 136);
AQM_DN_OFFSET(dn_alg, next, 144);
AQM_DN_ASSERT(sizeof(struct _ip6dn_args) == 80, "_ip6dn_args");
AQM_DN_ASSERT(sizeof(struct dn_pkt_tag) == 144, "dn_pkt_tag");
AQM_DN_OFFSET(dn_pkt_tag, rule, 0);
AQM_DN_OFFSET(dn_pkt_tag, iphdr_off, 136);
#undef AQM_DN_ASSERT
#endif

#endif /* !AQM_DN_COMPAT_H */
