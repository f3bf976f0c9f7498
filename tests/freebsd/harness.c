/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * harness.c: the module's real glue (aqm_llm.c, included whole so its
 * static callbacks can be called) and the real core, driven in user space
 * through the dummynet of shim.c with real IPv4 and IPv6 packets.  Built
 * with AddressSanitizer and UndefinedBehaviorSanitizer: a packet freed
 * twice or not at all, a write past a descriptor, a read past an instance,
 * or a use of a detached interface fails.
 *
 *	harness			the checks; prints "N passed, M failed"
 *	harness serve S E	the data path for a real aqmllmd for S seconds,
 *				its instance expiring every E ms (the region
 *				in the file named by AQM_LLM_SHIM_REGION)
 */

#include "aqm_llm.c"

#include <time.h>
#include <unistd.h>

static int checks, failures;

#define	CHECK(cond) do {						\
	__atomic_fetch_add(&checks, 1, __ATOMIC_SEQ_CST);		\
	if (!(cond)) {							\
		__atomic_fetch_add(&failures, 1, __ATOMIC_SEQ_CST);	\
		fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__,	\
		    #cond);						\
	}								\
} while (0)

static volatile int live_mbufs;

/* -- packets ------------------------------------------------------------------ */

static uint16_t
ip_checksum(const void *hdr, int len)
{
	const uint8_t *p = hdr;
	uint32_t sum = 0;
	int i;

	for (i = 0; i < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return ((uint16_t)~sum);
}

static struct mbuf *
mbuf_new(int off, int hdrlen, int len)
{
	struct mbuf *m = calloc(1, sizeof(*m));

	/* A frame starts 2 bytes in (ETHER_ALIGN): its IP header is aligned. */
	m->m_data = m->buf + (off != 0 ? 2 : 0);
	m->m_len = off + hdrlen;
	m->m_pkthdr.len = len;
	SLIST_INIT(&m->m_pkthdr.tags);
	__atomic_fetch_add(&live_mbufs, 1, __ATOMIC_SEQ_CST);
	return (m);
}

/* IPv4 at offset off (ETHER_HDR_LEN: a frame on the layer-2 path). */
static struct mbuf *
packet4_at(int off, uint8_t ecn, int len)
{
	struct mbuf *m = mbuf_new(off, sizeof(struct ip), len);
	struct ip *ip = (struct ip *)(m->m_data + off);

	if (off != 0) {		/* Ethernet: addresses, then IPv4's type */
		memset(m->m_data, 0xff, 12);
		m->m_data[12] = 0x08;
		m->m_data[13] = 0x00;
	}
	ip->ip_v = 4;
	ip->ip_hl = 5;
	ip->ip_tos = (uint8_t)(0x28 | ecn);	/* DSCP AF11 and the ECN bits */
	ip->ip_len = htons((uint16_t)len);
	ip->ip_ttl = 64;
	ip->ip_p = IPPROTO_UDP;
	ip->ip_src.s_addr = htonl(0x0a000001);
	ip->ip_dst.s_addr = htonl(0x0a000002);
	ip->ip_sum = 0;
	ip->ip_sum = htons(ip_checksum(ip, sizeof(*ip)));
	return (m);
}

static struct mbuf *
packet4(uint8_t ecn, int len)
{

	return (packet4_at(0, ecn, len));
}

static struct mbuf *
packet6(uint8_t ecn, int len)
{
	struct mbuf *m = mbuf_new(0, sizeof(struct ip6_hdr), len);
	struct ip6_hdr *ip6 = mtod(m, struct ip6_hdr *);

	ip6->ip6_flow = htonl(6u << 28 | (uint32_t)(0x28 | ecn) << 20 | 0x12345);
	ip6->ip6_plen = htons((uint16_t)(len - 40));
	ip6->ip6_nxt = IPPROTO_UDP;
	ip6->ip6_hlim = 64;
	return (m);
}

static uint8_t
ecn_at(struct mbuf *m, int off)
{
	struct ip *ip = (struct ip *)(m->m_data + off);

	if (ip->ip_v == 4)
		return (ip->ip_tos & 3);
	return ((ntohl(((struct ip6_hdr *)ip)->ip6_flow) >> 20) & 3);
}

static uint8_t
ecn_of(struct mbuf *m)
{

	return (ecn_at(m, 0));
}

static int
checksum_ok(struct mbuf *m, int off)
{

	return (ip_checksum(m->m_data + off, sizeof(struct ip)) == 0);
}

/* -- dummynet, as the harness drives it (its lock held, as dummynet does) -- */

static struct dn_schk *
sched(int nr, struct dn_aqm *aqm)
{
	struct dn_schk *s;

	pthread_mutex_lock(&shim_dn_lock);
	s = shim_sched_config(nr, AQM_LLM_NAME, aqm);
	pthread_mutex_unlock(&shim_dn_lock);
	return (s);
}

static void
sched_delete(struct dn_schk *s)
{
	int before = shim_mbufs_freed;

	pthread_mutex_lock(&shim_dn_lock);
	shim_sched_delete(s);
	pthread_mutex_unlock(&shim_dn_lock);
	__atomic_fetch_sub(&live_mbufs, shim_mbufs_freed - before,
	    __ATOMIC_SEQ_CST);
}

static struct dn_schk *
sched_reconfigure(struct dn_schk *s)
{
	int before = shim_mbufs_freed;

	pthread_mutex_lock(&shim_dn_lock);
	s = shim_sched_reconfigure(s);
	pthread_mutex_unlock(&shim_dn_lock);
	__atomic_fetch_sub(&live_mbufs, shim_mbufs_freed - before,
	    __ATOMIC_SEQ_CST);
	return (s);
}

/* A packet into dummynet: 0 queued, 1 dropped (and freed exactly then). */
static int
io(struct dn_schk *s, struct mbuf *m, int layer2)
{
	int before = shim_mbufs_freed, rc;

	pthread_mutex_lock(&shim_dn_lock);
	rc = shim_dn_io(s, m, layer2);
	pthread_mutex_unlock(&shim_dn_lock);
	CHECK((rc == 1) == (shim_mbufs_freed == before + 1));
	if (rc == 1)
		__atomic_fetch_sub(&live_mbufs, 1, __ATOMIC_SEQ_CST);
	return (rc);
}

static int
enqueue(struct dn_schk *s, struct mbuf *m)
{

	return (io(s, m, 0));
}

/* A packet out of dummynet; *dropped: packets the scheduler freed meanwhile. */
static struct mbuf *
serve(struct dn_schk *s, int *dropped)
{
	int before = shim_mbufs_freed;
	struct mbuf *m;

	pthread_mutex_lock(&shim_dn_lock);
	m = shim_dn_serve(s);
	pthread_mutex_unlock(&shim_dn_lock);
	*dropped = shim_mbufs_freed - before;
	__atomic_fetch_sub(&live_mbufs, *dropped, __ATOMIC_SEQ_CST);
	return (m);
}

static void
release(struct mbuf *m)
{

	/* Only dummynet's own tag is left: ours went at dequeue. */
	CHECK(m_tag_first(m) != NULL &&
	    SLIST_NEXT(m_tag_first(m), m_tag_link) == NULL);
	m_freem(m);
	__atomic_fetch_sub(&live_mbufs, 1, __ATOMIC_SEQ_CST);
}

static void
serve_all(struct dn_schk *s)
{
	struct mbuf *m;
	int dropped;

	while ((m = serve(s, &dropped)) != NULL)
		release(m);
}

/* net.inet.ip.dummynet.expire: dummynet drains the idle instance. */
static int
expire(struct dn_schk *s)
{
	int gone;

	pthread_mutex_lock(&shim_dn_lock);
	gone = shim_si_drain(s);
	pthread_mutex_unlock(&shim_dn_lock);
	return (gone);
}

static struct dn_sch_inst *
inst(struct dn_schk *s)
{

	return ((struct dn_sch_inst *)s->siht);
}

static struct dn_queue *
inst_q(struct dn_schk *s)
{

	return ((struct dn_queue *)(inst(s) + 1));
}

static int
ioctl_(u_long cmd, void *arg)
{

	return (shim_dev_ioctl(cmd, arg));
}

static uint64_t
sysctl_get(const char *name)
{
	uint64_t v = 0;

	CHECK(shim_sysctl(name, &v, NULL) == 0);
	return (v);
}

static struct aqm_llm_info
info(void)
{
	struct aqm_llm_info i;

	memset(&i, 0, sizeof(i));
	CHECK(ioctl_(AQMLLM_INFO, &i) == 0);
	return (i);
}

static struct aqm_counters
counters(int nr)
{
	struct aqm_llm_counters_req cr;

	memset(&cr, 0, sizeof(cr));
	cr.sched = nr;
	CHECK(ioctl_(AQMLLM_COUNTERS, &cr) == 0);
	return (cr.counters);
}

static int
attach(int32_t nr)
{

	return (ioctl_(AQMLLM_ATTACH, &nr));
}

static struct aqm_chan_hdr *
region_hdr(void)
{

	return ((struct aqm_chan_hdr *)aqm_llm_region);
}

/*
 * The defaults the harness runs with: the core's, without its harm budget
 * (these tests are about the glue delivering verdicts, not about how many
 * of them the core lets stand; kmod/core's tests are).
 */
static void
harness_defaults(void)
{
	uint64_t v;

	aqm_params_default(&aqm_llm_defaults);
#ifdef AQM_HARM_BUDGET_OFF
	v = AQM_HARM_BUDGET_OFF;
	CHECK(shim_sysctl("harm_budget_pct", NULL, &v) == 0);
#else
	(void)v;
#endif
}

static int
module_load(void)
{

	return (shim_module.data->evhand(NULL, MOD_LOAD, NULL));
}

static int
module_unload(void)
{

	return (shim_module.data->evhand(NULL, MOD_UNLOAD, NULL));
}

/* A flowset AQM (codel, pie) on the scheduler's internal flowset. */
static int aqm_inits, aqm_cleanups, aqm_fail_init;

static int
test_aqm_init(struct dn_queue *q)
{

	if (aqm_fail_init)
		return (ENOMEM);
	aqm_inits++;
	q->aqm_status = calloc(1, 64);
	return (0);
}

static int
test_aqm_cleanup(struct dn_queue *q)
{

	aqm_cleanups++;
	(free)(q->aqm_status);
	q->aqm_status = NULL;
	return (0);
}

static struct dn_aqm test_aqm = { test_aqm_init, test_aqm_cleanup };

/* -- item 5: sysctls exist only while the module is loaded ------------------ */

static void
test_no_sysctl_before_load(void)
{
	uint64_t v;

	/* The kernel linker registers static oids before MOD_LOAD. */
	CHECK(shim_sysctl_count() == 0);
	CHECK(shim_sysctl("instances", &v, NULL) == ENOENT);
	CHECK(shim_sysctl("decisions_model", &v, NULL) == ENOENT);
	CHECK(shim_lock_errors == 0);
}

/* -- items 1 and 8: the descriptor and the module's place at boot ------------ */

static void
test_load(void)
{
	static struct dn_alg no_dequeue = {
		.name = "no_dequeue", .enqueue = aqm_llm_enqueue,
	};
	struct aqm_llm_info i;

	/* Declared as DECLARE_DNSCHED_MODULE declares in-tree schedulers. */
	CHECK(shim_module.sub == SI_SUB_PROTO_FIREWALL &&
	    shim_module.order == SI_ORDER_ANY);
	shim_dn_boot();
	CHECK(shim_dn_alg_loaded);
	CHECK(shim_find_sched("aqm_llm") == &aqm_llm_desc);
	/* The list runs through our CK_LIST entry to the in-tree FIFO. */
	CHECK(shim_find_sched("FIFO") != NULL);
	CHECK(sizeof(aqm_llm_desc) == 160);
	CHECK(__offsetof(struct dn_alg, next) == 144);
	/* As load_dn_sched(): a scheduler without dequeue is refused. */
	CHECK(dn_sched_modevent(NULL, MOD_LOAD, &no_dequeue) == 1);
	CHECK(shim_find_sched("no_dequeue") == NULL);
	CHECK(aqm_llm_cdev->mode == 0600 && aqm_llm_cdev->uid == 0 &&
	    aqm_llm_cdev->gid == 0);
	i = info();
	CHECK(i.abi_version == AQM_CHAN_ABI_VERSION && i.instances == 0 &&
	    i.attached_sched == -1 && i.served_instance == 0);
	CHECK(i.region_size == aqm_chan_region_size(65536, 65536));
	CHECK(region_hdr()->magic == AQM_CHAN_MAGIC);
	CHECK(sysctl_get("instances") == 0);
	CHECK(sysctl_get("attached_sched") == (uint64_t)-1);
	harness_defaults();
}

/* -- item 2: the single-queue contract ------------------------------------------ */

static void
test_single_queue_contract(void)
{
	struct dn_schk *s = sched(2, &test_aqm);
	struct aqm_llm_params_req pr;
	struct dn_sch_inst *si;
	struct dn_queue *q;
	int i, refused = 0;

	CHECK(enqueue(s, packet4(2, 1000)) == 0);	/* C */
	CHECK(enqueue(s, packet4(1, 500)) == 0);	/* L */
	CHECK(enqueue(s, packet6(0, 300)) == 0);	/* C */
	si = inst(s);
	q = inst_q(s);
	/* What fifo_new_sched() sets up, where dummynet reads it. */
	CHECK(q->ni.oid.type == DN_QUEUE && q->_si == si && q->fs == s->fs);
	CHECK(aqm_inits == 1 && q->aqm_status != NULL);
	/* The counts dummynet's drain and `dnctl sched show` read. */
	CHECK(q->ni.length == 3 && q->ni.len_bytes == 1800);
	CHECK(si->ni.length == 3 && si->ni.len_bytes == 1800);
	CHECK(si->ni.tot_pkts == 3 && si->ni.tot_bytes == 1800);
	CHECK(expire(s) == 0);			/* not idle: kept */

	/* Drops at enqueue are counted where dummynet counts them. */
	memset(&pr, 0, sizeof(pr));
	pr.sched = 2;
	CHECK(ioctl_(AQMLLM_GETPARAMS, &pr) == 0);
	pr.params.limit_pkts = 4;
	CHECK(ioctl_(AQMLLM_SETPARAMS, &pr) == 0);
	for (i = 0; i < 3; i++)
		refused += enqueue(s, packet4(2, 100));
	CHECK(refused == 2);
	CHECK(q->ni.length == 4 && q->ni.drops == 2 && si->ni.drops == 2);
	CHECK(si->ni.tot_pkts == 6);

	serve_all(s);
	CHECK(q->ni.length == 0 && q->ni.len_bytes == 0 &&
	    si->ni.length == 0 && si->ni.len_bytes == 0);
	CHECK(expire(s) == 1);			/* idle: gone, AQM cleaned */
	CHECK(aqm_cleanups == 1);
	CHECK(sysctl_get("instances") == 0);

	/* An AQM whose init fails: dummynet frees the instance unseen. */
	aqm_fail_init = 1;
	CHECK(enqueue(s, packet4(1, 100)) == 1);
	aqm_fail_init = 0;
	CHECK(inst(s) == NULL);
	CHECK(sysctl_get("instances") == 0);
	sched_delete(s);
}

/* -- item 3: the attachment belongs to the scheduler number ------------------ */

static uint64_t daemon_last_seq;

static void
daemon_verdicts(struct aqm_chan *d, uint32_t action, int *n)
{
	struct aqm_state_rec s[64];
	struct aqm_verdict_rec v[64];
	int got, i;

	got = (int)aqm_state_pop_batch(d, s, 64);
	for (i = 0; i < got; i++) {
		v[i] = (struct aqm_verdict_rec){ s[i].seq, action, 1 };
		daemon_last_seq = s[i].seq;
	}
	CHECK(aqm_verdict_push_batch(d, v, (uint32_t)got) == (int64_t)got);
	*n = got;
}

static void
test_attachment_survives_instances(void)
{
	struct dn_schk *s = sched(3, NULL), *va, *vb;
	struct aqm_llm_params_req pr;
	struct aqm_chan daemon;
	struct aqm_llm_info i;
	struct mbuf *m;
	uint32_t gen0;
	uint64_t first, seq;
	int n, dropped;

	CHECK(attach(42) == ENOENT);		/* no such scheduler */
	CHECK(attach(0) == EINVAL);
	/* Configured, idle, no instance: the attachment is to the number. */
	CHECK(attach(3) == 0);
	i = info();
	CHECK(i.attached_sched == 3 && i.served_instance == 0 &&
	    i.sched_configured == 1 && i.sched_instances == 0);
	CHECK(aqm_chan_open(&daemon, aqm_llm_region, aqm_llm_region_size) ==
	    AQM_CHAN_OK);
	gen0 = region_hdr()->producer_gen;

	/* The first packet makes the instance, whose state takes the region. */
	CHECK(enqueue(s, packet4(2, 1000)) == 0);
	i = info();
	first = i.served_instance;
	CHECK(first != 0 && i.sched_instances == 1 && i.attach_count >= 1);
	CHECK(region_hdr()->producer_gen == gen0 + 1);
	CHECK((region_hdr()->flags & AQM_CHAN_F_PRODUCER_UP) != 0);
	daemon_verdicts(&daemon, AQM_ACT_MARK, &n);
	CHECK(n == 1);
	seq = daemon_last_seq;
	m = serve(s, &dropped);
	CHECK(m != NULL && ecn_of(m) == 3);	/* the daemon's mark */
	if (m != NULL)
		release(m);

	/* Parameters set for the scheduler. */
	memset(&pr, 0, sizeof(pr));
	pr.sched = 3;
	CHECK(ioctl_(AQMLLM_GETPARAMS, &pr) == 0);
	pr.params.target_ns = 5000000;
	CHECK(ioctl_(AQMLLM_SETPARAMS, &pr) == 0);

	/*
	 * Idle: dummynet expires the instance.  Its scheduler keeps the
	 * state, which goes on serving the region: nothing changes for the
	 * daemon, and the next instance carries on with it.
	 */
	CHECK(expire(s) == 1);
	i = info();
	CHECK(i.attached_sched == 3 && i.served_instance == first &&
	    i.sched_instances == 0 && i.instances == 0);
	CHECK((region_hdr()->flags & AQM_CHAN_F_PRODUCER_UP) != 0);
	CHECK(region_hdr()->producer_gen == gen0 + 1);
	CHECK(counters(3).verdicts_applied == 1);	/* readable while idle */
	CHECK(enqueue(s, packet4(2, 1000)) == 0);
	i = info();
	CHECK(i.served_instance == first && i.sched_instances == 1);
	CHECK(region_hdr()->producer_gen == gen0 + 1);
	daemon_verdicts(&daemon, AQM_ACT_MARK, &n);
	CHECK(n == 1 && daemon_last_seq == seq + 1);
	m = serve(s, &dropped);
	CHECK(m != NULL && ecn_of(m) == 3);
	if (m != NULL)
		release(m);
	CHECK(counters(3).verdicts_applied == 2);	/* the same core */
	CHECK(ioctl_(AQMLLM_GETPARAMS, &pr) == 0 &&
	    pr.params.target_ns == 5000000);
	seq = daemon_last_seq;

	/*
	 * Reconfigured with packets queued: they go, and the state with the
	 * old scheduler; the number stays attached, and the next instance's
	 * new state takes the region over, above the sequence numbers seen.
	 */
	CHECK(enqueue(s, packet4(1, 700)) == 0);
	CHECK(enqueue(s, packet4(2, 700)) == 0);
	s = sched_reconfigure(s);
	i = info();
	CHECK(i.attached_sched == 3 && i.served_instance == 0 &&
	    i.sched_configured == 1);
	CHECK((region_hdr()->flags & AQM_CHAN_F_PRODUCER_UP) == 0);
	CHECK(enqueue(s, packet4(2, 1000)) == 0);
	i = info();
	CHECK(i.served_instance > first && i.sched_instances == 1);
	CHECK(region_hdr()->producer_gen == gen0 + 2);
	(void)aqm_state_pop_batch(&daemon, (struct aqm_state_rec[8]){ 0 }, 8);
	CHECK(enqueue(s, packet4(2, 1000)) == 0);
	daemon_verdicts(&daemon, AQM_ACT_MARK, &n);
	CHECK(n == 1 && daemon_last_seq > seq + 2);
	serve_all(s);
	CHECK(counters(3).verdicts_applied == 1);	/* on the new core */
	CHECK(ioctl_(AQMLLM_GETPARAMS, &pr) == 0 &&
	    pr.params.target_ns == 15000000);	/* a new scheduler's */
	CHECK(expire(s) == 1);

	/*
	 * One number, two schedulers (as in two VNETs; a mask gives one
	 * scheduler several instances the same way): the oldest state is
	 * served, through expiry, and the next when its scheduler goes.
	 */
	va = sched(4, NULL);
	vb = sched(4, NULL);
	CHECK(attach(4) == 0);
	CHECK(enqueue(va, packet4(2, 100)) == 0);
	first = info().served_instance;
	CHECK(enqueue(vb, packet4(2, 100)) == 0);
	i = info();
	CHECK(i.served_instance == first);	/* still the oldest */
	CHECK(i.sched_instances == 2 && i.sched_configured == 2);
	serve_all(va);
	CHECK(expire(va) == 1);
	i = info();
	CHECK(i.served_instance == first && i.sched_instances == 1);
	gen0 = region_hdr()->producer_gen;
	sched_delete(va);			/* its kept state goes with it */
	i = info();
	CHECK(i.served_instance != 0 && i.served_instance != first &&
	    i.sched_configured == 1);
	CHECK(region_hdr()->producer_gen == gen0 + 1);
	serve_all(vb);
	sched_delete(vb);
	CHECK(info().served_instance == 0 && info().attached_sched == 4);

	/* The scheduler's reference keeps dummynet from unloading us. */
	CHECK(shim_alg_ref_count(&aqm_llm_desc) == 1);
	CHECK(aqm_llm_desc.config != NULL);
	pthread_mutex_lock(&shim_dn_lock);
	if (aqm_llm_desc.config != NULL)	/* 'sched 3 config', unchanged */
		aqm_llm_desc.config(s);
	pthread_mutex_unlock(&shim_dn_lock);
	CHECK(shim_alg_ref_count(&aqm_llm_desc) == 1);
	CHECK(module_unload() == EBUSY);
	CHECK(ioctl_(AQMLLM_DETACH, NULL) == 0);
	CHECK(info().attached_sched == -1);
	sched_delete(s);
	CHECK(shim_alg_ref_count(&aqm_llm_desc) == 0);
}

/* -- item 4: interfaces that leave while their packets wait ------------------- */

static void
test_rcvif_departure(void)
{
	struct dn_schk *s = sched(5, NULL);
	struct ifnet *gone = shim_if_attach("em0"), *stays = shim_if_attach("em1");
	struct ifnet fake_snd_tag;
	struct mbuf *m, *a, *b, *c;
	int dropped, total = 0, out = 0;

	a = packet4(2, 500);
	a->m_pkthdr.rcvif = gone;
	b = packet4(2, 500);
	b->m_pkthdr.rcvif = stays;
	c = packet4(2, 500);		/* outbound with a send tag */
	c->m_pkthdr.csum_flags = CSUM_SND_TAG;
	c->m_pkthdr.rcvif = &fake_snd_tag;
	CHECK(enqueue(s, a) == 0);
	CHECK(enqueue(s, b) == 0);
	CHECK(enqueue(s, c) == 0);
	shim_if_detach(gone);
	while ((m = serve(s, &dropped)) != NULL || dropped) {
		total += dropped;
		if (m == NULL)
			continue;
		out++;
		CHECK(m == b || m == c);
		if (m == b)
			CHECK(m->m_pkthdr.rcvif == stays);
		if (m == c)
			CHECK(m->m_pkthdr.rcvif == &fake_snd_tag);
		release(m);
	}
	CHECK(total == 1 && out == 2);
	CHECK(inst_q(s)->ni.drops == 1 && inst_q(s)->ni.length == 0);
	shim_if_detach(stays);
	sched_delete(s);
}

/* -- item 5: an instance's mutex exists before anyone can find it ------------ */

static int hook_sched;

static void
look_at_instances(void)
{
	struct aqm_llm_counters_req cr;
	uint64_t v;

	(void)shim_sysctl("decisions_model", &v, NULL);
	memset(&cr, 0, sizeof(cr));
	cr.sched = hook_sched;
	(void)ioctl_(AQMLLM_COUNTERS, &cr);
}

static void
test_instance_ready_before_listed(void)
{
	struct dn_schk *s = sched(6, NULL);
	int errors = shim_lock_errors;

	/* Another thread's ioctl and sysctl, just as the list lock drops. */
	hook_sched = 6;
	shim_unlock_hook_name = "aqm_llm";
	shim_unlock_hook = look_at_instances;
	CHECK(enqueue(s, packet4(1, 100)) == 0);
	shim_unlock_hook = NULL;
	CHECK(shim_lock_errors == errors);
	serve_all(s);
	sched_delete(s);
}

/* -- item 6: the layer-2 path ------------------------------------------------- */

static void
test_layer2_frames(void)
{
	struct dn_schk *s = sched(7, NULL);
	struct aqm_counters c;
	struct mbuf *m;
	int dropped;

	/* An ECT(1) frame on the bridge path: IP after the Ethernet header. */
	CHECK(io(s, packet4_at(ETHER_HDR_LEN, 1, 1000), 1) == 0);
	CHECK(io(s, packet4_at(ETHER_HDR_LEN, 0, 1000), 1) == 0);
	c = counters(7);
	CHECK(c.pkts_in[AQM_QUEUE_L] == 1 && c.pkts_in[AQM_QUEUE_C] == 1);
	shim_now_ns += 2000000;		/* 2 ms: the L4S step marks it */
	m = serve(s, &dropped);
	CHECK(m != NULL && ecn_at(m, ETHER_HDR_LEN) == 3 &&
	    checksum_ok(m, ETHER_HDR_LEN));
	if (m != NULL)
		release(m);
	serve_all(s);
	sched_delete(s);
}

/* -- item 7: dummynet's tag stays first --------------------------------------- */

static void
test_tag_order(void)
{
	struct dn_schk *s = sched(8, NULL);
	struct aqm_llm_state *st;
	struct mbuf *m;
	int errors = shim_dn_tag_errors;
	u_int q;

	CHECK(enqueue(s, packet4(1, 100)) == 0);
	CHECK(enqueue(s, packet4(2, 100)) == 0);
	/* Dummynet may read any packet in its queues with dn_tag_get(). */
	st = AQM_LLM_SI(inst(s))->st;
	for (q = 0; q < AQM_NQUEUES; q++)
		for (m = st->q[q].head; m != NULL; m = m->m_nextpkt)
			(void)dn_tag_get(m);
	CHECK(shim_dn_tag_errors == errors);
	serve_all(s);
	CHECK(shim_dn_tag_errors == errors);
	sched_delete(s);
}

#ifndef AQM_LLM_ITEMS_ONLY
/* -- the data path -------------------------------------------------------------- */

static void
test_classification_and_step_marks(void)
{
	struct dn_schk *s = sched(11, NULL);
	struct aqm_llm_state *st;
	struct mbuf *m;
	int dropped, i, marked = 0;

	/* ECT(1) and CE to L; Not-ECT and ECT(0) to C; IPv4 and IPv6. */
	enqueue(s, packet4(1, 1000));
	enqueue(s, packet6(3, 1000));
	enqueue(s, packet4(0, 1000));
	enqueue(s, packet6(2, 1000));
	st = AQM_LLM_SI(inst(s))->st;
	CHECK(st->q[AQM_QUEUE_L].count == 2 && st->q[AQM_QUEUE_C].count == 2);
	CHECK(st->core->cnt.pkts_in[AQM_QUEUE_L] == 2);

	/* 2 ms in the L queue: the 1 ms step marks them CE. */
	shim_now_ns += 2000000;
	for (i = 0; i < 4; i++) {
		m = serve(s, &dropped);
		CHECK(m != NULL && dropped == 0);
		if (m == NULL)
			break;
		if (i < 2) {		/* L first after idle */
			CHECK(ecn_of(m) == 3);
			marked++;
		} else {
			CHECK(ecn_of(m) == 0 || ecn_of(m) == 2);
		}
		if (mtod(m, struct ip *)->ip_v == 4)
			CHECK(checksum_ok(m, 0));
		release(m);
	}
	CHECK(marked == 2 && st->core->cnt.step_marks == 2);
	CHECK(serve(s, &dropped) == NULL);
	sched_delete(s);
}

static void
test_ipv4_mark_keeps_checksum(void)
{
	struct dn_schk *s = sched(12, NULL);
	struct mbuf *m;
	int dropped;

	enqueue(s, packet4(1, 1500));		/* ECT(1): step mark */
	shim_now_ns += 5000000;
	m = serve(s, &dropped);
	CHECK(m != NULL && ecn_of(m) == 3 && checksum_ok(m, 0));
	CHECK((mtod(m, struct ip *)->ip_tos & 0xfc) == 0x28);	/* DSCP kept */
	release(m);
	sched_delete(s);
}

static void
test_limits_and_params(void)
{
	struct dn_schk *s = sched(13, NULL);
	struct aqm_llm_params_req pr;
	uint64_t v;
	int i, refused = 0;

	memset(&pr, 0, sizeof(pr));
	pr.sched = 13;
	CHECK(ioctl_(AQMLLM_GETPARAMS, &pr) == 0);
	CHECK(pr.params.target_ns == 15000000 && pr.params.limit_pkts == 10000);
	pr.params.coupling_factor = 0;			/* out of range */
	CHECK(ioctl_(AQMLLM_SETPARAMS, &pr) == EINVAL);
	CHECK(pr.params.coupling_factor == 2);		/* unchanged */
	pr.params.limit_pkts = 4;
	CHECK(ioctl_(AQMLLM_SETPARAMS, &pr) == 0);
	pr.sched = 99;
	CHECK(ioctl_(AQMLLM_GETPARAMS, &pr) == ENOENT);

	for (i = 0; i < 6; i++)
		refused += enqueue(s, packet4(2, 1000));
	CHECK(refused == 2);
	serve_all(s);
	CHECK(ioctl_(0x12345678, &pr) == ENOTTY);

	/* Defaults for new schedulers, validated as a whole. */
	v = 0;
	CHECK(shim_sysctl("coupling_factor", NULL, &v) == EINVAL);
	CHECK(sysctl_get("coupling_factor") == 2);
	v = 3;
	CHECK(shim_sysctl("coupling_factor", NULL, &v) == 0);
	CHECK(aqm_llm_defaults.coupling_factor == 3);
	v = 2;
	CHECK(shim_sysctl("coupling_factor", NULL, &v) == 0);
	/* ABI v2's parameters, beside the others. */
	v = 20;
	CHECK(shim_sysctl("step_thresh_pkts", NULL, &v) == 0);
	CHECK(aqm_llm_defaults.step_thresh_pkts == 20);
	v = 2;
	CHECK(shim_sysctl("min_qlen_step", NULL, &v) == 0);
	CHECK(aqm_llm_defaults.min_qlen_step == 2);
	v = AQM_HARM_BUDGET_MAX + 1;
	CHECK(shim_sysctl("harm_budget_pct", NULL, &v) == EINVAL);
	v = 100;
	CHECK(shim_sysctl("harm_budget_pct", NULL, &v) == 0);
	CHECK(sysctl_get("harm_budget_pct") == 100);
	harness_defaults();
	sched_delete(s);
}

static void
test_verdicts_through_the_region(void)
{
	struct dn_schk *s = sched(14, NULL);
	struct aqm_llm_state *st;
	struct aqm_verdict_rec v[3];
	struct aqm_state_rec rec[8];
	struct aqm_chan daemon;
	struct aqm_counters c;
	struct mbuf *m;
	int dropped;

	CHECK(attach(14) == 0);
	CHECK(aqm_chan_open(&daemon, aqm_llm_region, aqm_llm_region_size) ==
	    AQM_CHAN_OK);
	(void)aqm_state_pop_batch(&daemon, rec, 8);	/* what came before */

	enqueue(s, packet4(2, 1000));		/* C, ECT(0) */
	enqueue(s, packet4(0, 1000));		/* C, Not-ECT */
	enqueue(s, packet6(0, 1000));		/* C, Not-ECT */
	st = AQM_LLM_SI(inst(s))->st;
	CHECK(aqm_state_pop_batch(&daemon, rec, 8) == 3);
	CHECK(rec[0].queue == AQM_QUEUE_C && rec[0].ecn == 2);
	v[0] = (struct aqm_verdict_rec){ rec[0].seq, AQM_ACT_MARK, 1 };
	v[1] = (struct aqm_verdict_rec){ rec[1].seq, AQM_ACT_MARK, 1 };
	v[2] = (struct aqm_verdict_rec){ rec[2].seq, AQM_ACT_DROP, 1 };
	CHECK(aqm_verdict_push_batch(&daemon, v, 3) == 3);

	m = serve(s, &dropped);
	CHECK(m != NULL && dropped == 0 && ecn_of(m) == 3 && checksum_ok(m, 0));
	if (m != NULL)
		release(m);
	m = serve(s, &dropped);		/* mark-as-drop and drop */
	CHECK(m == NULL && dropped == 2);
	CHECK(inst_q(s)->ni.drops == 2);

	c = counters(14);
	CHECK(c.verdicts_applied == 3 && c.marks_model[AQM_QUEUE_C] == 1 &&
	    c.drops_model[AQM_QUEUE_C] == 2 && c.states_published == 3);
	CHECK(sysctl_get("decisions_model") == 3);

	/* The tick serves the mailbox and publishes the counters. */
	daemon.ctrl->params = st->core->params;
	daemon.ctrl->params.target_ns = 5000000;
	daemon.ctrl->param_req++;
	shim_callout_fire(&st->tick);
	CHECK(daemon.ctrl->param_ack == daemon.ctrl->param_req &&
	    daemon.ctrl->param_result == 0);
	CHECK(st->core->params.target_ns == 5000000);
	CHECK(daemon.ctrl->counters.verdicts_applied == 3);
	CHECK(st->tick.pending);		/* rearmed */

	/* A mailbox change outlives the instance too. */
	CHECK(expire(s) == 1);
	enqueue(s, packet4(2, 100));
	CHECK(AQM_LLM_SI(inst(s))->st->core->params.target_ns == 5000000);
	serve_all(s);

	CHECK(ioctl_(AQMLLM_DETACH, NULL) == 0);
	CHECK(info().attached_sched == -1 && info().served_instance == 0);
	sched_delete(s);
}

/* -- the device, the pager and unload (item 5: destroy_dev first) -------------- */

static void
test_mmap_and_unload(void)
{
	struct dn_schk *s = sched(15, NULL);
	struct vm_page page = { 0, 0, 0, 0 }, *mres = &page;
	struct callout *tick;
	vm_object_t obj;

	enqueue(s, packet4(1, 700));		/* left queued at teardown */
	CHECK(module_unload() == EBUSY);
	tick = &AQM_LLM_SI(inst(s))->st->tick;
	shim_callout_running = 1;		/* the tick runs as it goes */
	sched_delete(s);
	shim_callout_running = 0;
	CHECK(sysctl_get("instances") == 0 && aqm_llm_pending_frees == 1);
	CHECK(module_unload() == EBUSY);	/* its state is still draining */
	shim_callout_finish(tick);		/* freed from the drain callback */
	CHECK(aqm_llm_pending_frees == 0);

	CHECK(shim_dev_mmap(round_page(aqm_llm_region_size) + 4096, &obj) ==
	    EINVAL);
	CHECK(shim_dev_mmap(8192, &obj) == 0);
	CHECK(aqm_llm_mapped == 1);
	CHECK(module_unload() == EBUSY);
	CHECK(shim_find_sched("aqm_llm") == &aqm_llm_desc);	/* still ours */
	CHECK(info().abi_version == AQM_CHAN_ABI_VERSION);	/* device back */
	CHECK(shim_pager_ops->cdev_pg_fault(obj, 4096, 3, &mres) == VM_PAGER_OK);
	CHECK(mres->phys_addr == (vm_paddr_t)(uintptr_t)aqm_llm_region + 4096);
	free(mres, NULL);
	mres = &page;
	CHECK(shim_pager_ops->cdev_pg_fault(obj, aqm_llm_region_size + 4096, 3,
	    &mres) == VM_PAGER_FAIL);
	shim_pager_ops->cdev_pg_dtor(obj->handle);
	CHECK(aqm_llm_mapped == 0);
}

static void
test_out_of_memory(void)
{
	struct dn_schk *s = sched(16, NULL);

	shim_fail_malloc = 1;			/* no state for the instance */
	CHECK(enqueue(s, packet4(1, 100)) == 1);
	shim_fail_malloc = 0;
	CHECK(sysctl_get("instances") == 0 && inst_q(s)->ni.drops == 1);
	CHECK(enqueue(s, packet4(1, 100)) == 0);	/* the next one makes it */
	CHECK(sysctl_get("instances") == 1);
	shim_fail_malloc = 1;			/* no tag for this packet */
	CHECK(enqueue(s, packet4(1, 100)) == 1);
	shim_fail_malloc = 0;
	CHECK(AQM_LLM_SI(inst(s))->st->core->qlen[AQM_QUEUE_L] == 1);
	serve_all(s);
	sched_delete(s);
}

/* -- item 5: ioctls and sysctls from another thread, instances coming and going */

static volatile int stress_stop, stress_rounds;

static void *
stress_control(void *arg)
{
	struct aqm_llm_counters_req cr;
	struct aqm_llm_params_req pr;
	struct aqm_llm_info i;
	uint64_t v;
	int n = 0;

	(void)arg;
	while (!__atomic_load_n(&stress_stop, __ATOMIC_SEQ_CST)) {
		(void)ioctl_(AQMLLM_INFO, &i);
		(void)attach(17);
		memset(&cr, 0, sizeof(cr));
		cr.sched = 17;
		(void)ioctl_(AQMLLM_COUNTERS, &cr);
		memset(&pr, 0, sizeof(pr));
		pr.sched = 17;
		if (ioctl_(AQMLLM_GETPARAMS, &pr) == 0 && (n & 1))
			(void)ioctl_(AQMLLM_SETPARAMS, &pr);
		(void)shim_sysctl("decisions_fallback", &v, NULL);
		(void)shim_sysctl("served_instance", &v, NULL);
		if ((n++ & 15) == 0)
			(void)ioctl_(AQMLLM_DETACH, NULL);
		__atomic_store_n(&stress_rounds, n, __ATOMIC_SEQ_CST);
	}
	return ((void *)(intptr_t)n);
}

static void
test_control_races_instances(void)
{
	struct dn_schk *s = sched(17, NULL);
	struct aqm_llm_state *st;
	pthread_t t;
	void *rounds;
	int errors = shim_lock_errors, i, k;

	stress_stop = 0;
	stress_rounds = 0;
	CHECK(pthread_create(&t, NULL, stress_control, NULL) == 0);
	/* At least 300 rounds here, and 100 there, interleaved. */
	for (i = 0; i < 300 ||
	    __atomic_load_n(&stress_rounds, __ATOMIC_SEQ_CST) < 100; i++) {
		for (k = 0; k < 4; k++)
			(void)enqueue(s, packet4((uint8_t)(k & 1 ? 1 : 2), 500));
		st = AQM_LLM_SI(inst(s))->st;
		if (st != NULL)
			shim_callout_fire(&st->tick);
		shim_now_ns += 1000000;
		if (i % 3 == 0)
			serve_all(s);
		if (i % 3 == 0)
			(void)expire(s);
		if (i % 50 == 49)
			s = sched_reconfigure(s);
	}
	__atomic_store_n(&stress_stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(t, &rounds);
	CHECK((intptr_t)rounds >= 100);
	CHECK(shim_lock_errors == errors);
	serve_all(s);
	(void)ioctl_(AQMLLM_DETACH, NULL);
	sched_delete(s);
}
#endif /* !AQM_LLM_ITEMS_ONLY */

/* -- item 5: unload destroys the device before it trusts the mapping count -- */

static int hook_mmap_rc = -1;

static void
mmap_during_unload(void)
{
	vm_object_t obj;

	hook_mmap_rc = shim_dev_mmap(8192, &obj);
}


static void
test_unload(void)
{

	CHECK(sysctl_get("instances") == 0);
	/* An mmap attempt where dummynet's unload sleeps. */
	shim_epoch_wait_hook = mmap_during_unload;
	CHECK(module_unload() == 0);
	shim_epoch_wait_hook = NULL;
	CHECK(hook_mmap_rc == ENXIO);
	CHECK(shim_find_sched("aqm_llm") == NULL);
	/* Gone with the module: the sysctls and the device. */
	CHECK(shim_sysctl_count() == 0);
	CHECK(shim_dev_ioctl(AQMLLM_INFO, NULL) == ENXIO);
	CHECK(shim_lock_errors == 0);
}

static void
test_reload(void)
{

	CHECK(module_load() == 0);
	CHECK(shim_find_sched("aqm_llm") == &aqm_llm_desc);
	CHECK(info().attached_sched == -1);
	CHECK(module_unload() == 0);
}

/* -- serve: the data path for a real aqmllmd -------------------------------- */

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

/*
 * Packets at about 2000/s through scheduler 1, in windows of window_ms.  At
 * the end of each window the queue empties and dummynet expires the
 * instance (the next packet makes a new one), or, every third window, the
 * scheduler is reconfigured (a new state takes the region over).  One JSON
 * line per window: the state served, its counters, the region's producer
 * generation, and what ended the window.
 */
static int
serve_main(double seconds, int window_ms)
{
	struct dn_schk *s;
	struct aqm_llm_state *st;
	struct aqm_counters c;
	struct aqm_llm_info i;
	uint64_t start, next_window, next_tick;
	struct mbuf *m;
	int dropped, k = 0, w = 0;

	shim_dn_boot();
	harness_defaults();
	s = sched(1, NULL);
	CHECK(attach(1) == 0);
	start = mono_ns();
	next_window = start + (uint64_t)window_ms * 1000000ull;
	next_tick = start;
	while ((shim_now_ns = mono_ns()) < start + (uint64_t)(seconds * 1e9)) {
		/*
		 * A bottleneck that sends one packet per 0.5 ms once 8 wait:
		 * a packet waits about 4 ms, time for its verdict to arrive
		 * (the core's deadline counts the packets ahead at its rate).
		 */
		(void)enqueue(s, packet4((uint8_t)(k++ & 1 ? 1 : 2), 1000));
		usleep(500);
		shim_now_ns = mono_ns();
		if (inst(s) != NULL && inst_q(s)->ni.length > 8 &&
		    (m = serve(s, &dropped)) != NULL)
			release(m);
		if (shim_now_ns >= next_tick && inst(s) != NULL &&
		    (st = AQM_LLM_SI(inst(s))->st) != NULL) {
			shim_callout_fire(&st->tick);
			next_tick = shim_now_ns + 10000000ull;
		}
		if (shim_now_ns < next_window)
			continue;
		serve_all(s);
		c = counters(1);
		i = info();
		printf("{\"window\": %d, \"served\": %ju, \"pkts\": %ju, "
		    "\"verdicts_applied\": %ju, \"decisions_model\": %ju, "
		    "\"producer_gen\": %u, \"attach_count\": %u, "
		    "\"then\": \"%s\"}\n", w, (uintmax_t)i.served_instance,
		    (uintmax_t)(c.pkts_in[0] + c.pkts_in[1]),
		    (uintmax_t)c.verdicts_applied, (uintmax_t)c.decisions_model,
		    region_hdr()->producer_gen, i.attach_count,
		    w % 3 == 2 ? "reconfigure" : "expire");
		fflush(stdout);
		if (w % 3 == 2)
			s = sched_reconfigure(s);
		else
			CHECK(expire(s) == 1);
		w++;
		next_window = shim_now_ns + (uint64_t)window_ms * 1000000ull;
	}
	serve_all(s);
	sched_delete(s);
	CHECK(module_unload() == 0);
	return (failures != 0);
}

static const struct {
	const char	*name;
	void		(*fn)(void);
} item_tests[] = {
	{ "single_queue_contract", test_single_queue_contract },	/* 2 */
	{ "attachment", test_attachment_survives_instances },		/* 3 */
	{ "rcvif_departure", test_rcvif_departure },			/* 4 */
	{ "instance_ready", test_instance_ready_before_listed },	/* 5 */
	{ "layer2", test_layer2_frames },				/* 6 */
	{ "tag_order", test_tag_order },				/* 7 */
#ifndef AQM_LLM_ITEMS_ONLY
	{ "classification", test_classification_and_step_marks },
	{ "ipv4_checksum", test_ipv4_mark_keeps_checksum },
	{ "limits_and_params", test_limits_and_params },
	{ "verdicts", test_verdicts_through_the_region },
	{ "mmap", test_mmap_and_unload },
	{ "out_of_memory", test_out_of_memory },
	{ "control_races", test_control_races_instances },		/* 5 */
#endif
};

/*
 * harness: every test.  harness only NAME: the load, that test and the
 * unload (to see one test fail alone against an older glue).
 */
int
main(int argc, char **argv)
{
	const char *only = NULL;
	size_t i;

	if (argc == 4 && strcmp(argv[1], "serve") == 0)
		return (serve_main(atof(argv[2]), atoi(argv[3])));
	if (argc == 3 && strcmp(argv[1], "only") == 0)
		only = argv[2];
	test_no_sysctl_before_load();			/* 5 */
	test_load();					/* 1, 8 */
	for (i = 0; i < sizeof(item_tests) / sizeof(item_tests[0]); i++)
		if (only == NULL || strcmp(only, item_tests[i].name) == 0)
			item_tests[i].fn();
	test_unload();					/* 5 */
	test_reload();
	CHECK(live_mbufs == 0);
	CHECK(shim_lock_errors == 0 && shim_dn_tag_errors == 0);
	printf("%d passed, %d failed\n", checks - failures, failures);
	return (failures != 0);
}
