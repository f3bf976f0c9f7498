/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * harness.c: the module's real glue (aqm_llm.c, included whole so its
 * static callbacks can be called) and the real core, driven in user space
 * with real IPv4 and IPv6 packets.  Built with AddressSanitizer and
 * UndefinedBehaviorSanitizer: a packet freed twice, or not at all, fails.
 */

#include "aqm_llm.c"

static int checks, failures;

#define	CHECK(cond) do {						\
	checks++;							\
	if (!(cond)) {							\
		failures++;						\
		fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__,	\
		    #cond);						\
	}								\
} while (0)

static int live_mbufs;

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
packet4(uint8_t ecn, int len)
{
	struct mbuf *m = calloc(1, sizeof(*m));
	struct ip *ip;

	m->m_data = m->buf;
	m->m_len = sizeof(struct ip);
	m->m_pkthdr.len = len;
	SLIST_INIT(&m->m_pkthdr.tags);
	ip = mtod(m, struct ip *);
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
	live_mbufs++;
	return (m);
}

static struct mbuf *
packet6(uint8_t ecn, int len)
{
	struct mbuf *m = calloc(1, sizeof(*m));
	struct ip6_hdr *ip6;

	m->m_data = m->buf;
	m->m_len = sizeof(struct ip6_hdr);
	m->m_pkthdr.len = len;
	SLIST_INIT(&m->m_pkthdr.tags);
	ip6 = mtod(m, struct ip6_hdr *);
	ip6->ip6_flow = htonl(6u << 28 | (uint32_t)(0x28 | ecn) << 20 | 0x12345);
	ip6->ip6_plen = htons((uint16_t)(len - 40));
	ip6->ip6_nxt = IPPROTO_UDP;
	ip6->ip6_hlim = 64;
	live_mbufs++;
	return (m);
}

static uint8_t
ecn_of(struct mbuf *m)
{
	struct ip *ip = mtod(m, struct ip *);

	if (ip->ip_v == 4)
		return (ip->ip_tos & 3);
	return ((ntohl(mtod(m, struct ip6_hdr *)->ip6_flow) >> 20) & 3);
}

static int
checksum_ok(struct mbuf *m)
{

	return (ip_checksum(mtod(m, struct ip *), sizeof(struct ip)) == 0);
}

/* One dummynet scheduler instance, as dummynet would allocate it. */
static struct dn_sch_inst *
instance(int sched_nr)
{
	struct dn_sch_inst *si;
	struct dn_schk *schk = calloc(1, sizeof(*schk));

	schk->sch.sched_nr = (uint32_t)sched_nr;
	si = calloc(1, sizeof(*si) + shim_dn_alg->si_datalen);
	si->sched = schk;
	CHECK(shim_dn_alg->new_sched(si) == 0);
	shim_dn_alg->ref_count++;
	return (si);
}

static void
instance_free(struct dn_sch_inst *si)
{
	int before = shim_mbufs_freed;
	struct aqm_llm_state *st = ((struct aqm_llm_si *)si)->st;
	int queued = st->q[0].count + st->q[1].count;

	CHECK(shim_dn_alg->free_sched(si) == 0);
	CHECK(shim_mbufs_freed - before == queued);
	live_mbufs -= queued;
	shim_dn_alg->ref_count--;
	free(si->sched, NULL);
	free(si, NULL);
}

static int
enqueue(struct dn_sch_inst *si, struct mbuf *m)
{
	int before = shim_mbufs_freed, rc;

	rc = shim_dn_alg->enqueue(si, NULL, m);
	/* Consumed either way: freed exactly when refused. */
	CHECK((rc == 1) == (shim_mbufs_freed == before + 1));
	if (rc == 1)
		live_mbufs--;
	return (rc);
}

static struct mbuf *
dequeue(struct dn_sch_inst *si, int *dropped)
{
	int before = shim_mbufs_freed;
	struct mbuf *m;

	m = shim_dn_alg->dequeue(si);
	*dropped = shim_mbufs_freed - before;
	live_mbufs -= *dropped;
	return (m);
}

static void
release(struct mbuf *m)
{

	CHECK(SLIST_EMPTY(&m->m_pkthdr.tags));	/* our tag went at dequeue */
	free(m, NULL);
	live_mbufs--;
}

static int
ioctl_(u_long cmd, void *arg)
{

	return (aqm_llm_cdevsw.d_ioctl(aqm_llm_cdev, cmd, arg, 0, curthread));
}

static void
test_load(void)
{
	struct aqm_llm_info info;

	CHECK(shim_module->evhand(NULL, MOD_LOAD, NULL) == 0);
	CHECK(shim_dn_alg == &aqm_llm_desc);
	CHECK(strcmp(shim_dn_alg->name, "aqm_llm") == 0);
	CHECK(aqm_llm_cdev->mode == 0600 && aqm_llm_cdev->uid == 0 &&
	    aqm_llm_cdev->gid == 0);
	CHECK(ioctl_(AQMLLM_INFO, &info) == 0);
	CHECK(info.abi_version == AQM_CHAN_ABI_VERSION &&
	    info.instances == 0 && info.attached_sched == -1);
	CHECK(info.region_size == aqm_chan_region_size(65536, 65536));
	CHECK(((struct aqm_chan_hdr *)aqm_llm_region)->magic == AQM_CHAN_MAGIC);
}

static void
test_classification_and_step_marks(void)
{
	struct dn_sch_inst *si = instance(1);
	struct aqm_llm_state *st = ((struct aqm_llm_si *)si)->st;
	struct mbuf *m;
	int dropped, i, marked = 0;

	/* ECT(1) and CE to L; Not-ECT and ECT(0) to C; IPv4 and IPv6. */
	enqueue(si, packet4(1, 1000));
	enqueue(si, packet6(3, 1000));
	enqueue(si, packet4(0, 1000));
	enqueue(si, packet6(2, 1000));
	CHECK(st->q[AQM_QUEUE_L].count == 2 && st->q[AQM_QUEUE_C].count == 2);
	CHECK(st->core->cnt.pkts_in[AQM_QUEUE_L] == 2);

	/* 2 ms in the L queue: the 1 ms step marks them CE. */
	shim_now_ns += 2000000;
	for (i = 0; i < 4; i++) {
		m = dequeue(si, &dropped);
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
			CHECK(checksum_ok(m));
		release(m);
	}
	CHECK(marked == 2 && st->core->cnt.step_marks == 2);
	CHECK(dequeue(si, &dropped) == NULL);
	instance_free(si);
}

static void
test_ipv4_mark_keeps_checksum(void)
{
	struct dn_sch_inst *si = instance(2);
	struct mbuf *m;
	int dropped;

	enqueue(si, packet4(1, 1500));		/* ECT(1): step mark */
	shim_now_ns += 5000000;
	m = dequeue(si, &dropped);
	CHECK(m != NULL && ecn_of(m) == 3 && checksum_ok(m));
	CHECK((mtod(m, struct ip *)->ip_tos & 0xfc) == 0x28);	/* DSCP kept */
	release(m);
	instance_free(si);
}

static void
test_limits_and_params(void)
{
	struct dn_sch_inst *si = instance(3);
	struct aqm_llm_params_req pr;
	int i, refused = 0, dropped;
	struct mbuf *m;

	memset(&pr, 0, sizeof(pr));
	pr.sched = 3;
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
		refused += enqueue(si, packet4(2, 1000));
	CHECK(refused == 2);
	while ((m = dequeue(si, &dropped)) != NULL)
		release(m);
	instance_free(si);
}

static void
test_verdicts_through_the_region(void)
{
	struct dn_sch_inst *si = instance(4);
	struct aqm_llm_state *st = ((struct aqm_llm_si *)si)->st;
	struct aqm_llm_counters_req cr;
	struct aqm_verdict_rec v[3];
	struct aqm_state_rec s[8];
	struct aqm_chan daemon;
	struct sysctl_req req;
	struct mbuf *m;
	int32_t nr = 4;
	int dropped;

	CHECK(ioctl_(AQMLLM_ATTACH, &nr) == 0);
	CHECK(aqm_llm_attached == st);
	nr = 42;
	CHECK(ioctl_(AQMLLM_ATTACH, &nr) == ENOENT);
	CHECK(aqm_chan_open(&daemon, aqm_llm_region, aqm_llm_region_size) ==
	    AQM_CHAN_OK);

	enqueue(si, packet4(2, 1000));		/* seq 0: C, ECT(0) */
	enqueue(si, packet4(0, 1000));		/* seq 1: C, Not-ECT */
	enqueue(si, packet6(2, 1000));		/* seq 2: C, ECT(0) */
	CHECK(aqm_state_pop_batch(&daemon, s, 8) == 3);
	CHECK(s[0].seq == 0 && s[0].queue == AQM_QUEUE_C && s[0].ecn == 2);
	v[0] = (struct aqm_verdict_rec){ 0, AQM_ACT_MARK, 1 };
	v[1] = (struct aqm_verdict_rec){ 1, AQM_ACT_MARK, 1 };	/* => drop */
	v[2] = (struct aqm_verdict_rec){ 2, AQM_ACT_DROP, 1 };
	CHECK(aqm_verdict_push_batch(&daemon, v, 3) == 3);

	m = dequeue(si, &dropped);
	CHECK(m != NULL && dropped == 0 && ecn_of(m) == 3 && checksum_ok(m));
	if (m != NULL)
		release(m);
	m = dequeue(si, &dropped);		/* seq 1 and 2 both dropped */
	CHECK(m == NULL && dropped == 2);

	memset(&cr, 0, sizeof(cr));
	cr.sched = 4;
	CHECK(ioctl_(AQMLLM_COUNTERS, &cr) == 0);
	CHECK(cr.counters.verdicts_applied == 3 &&
	    cr.counters.marks_model[AQM_QUEUE_C] == 1 &&
	    cr.counters.drops_model[AQM_QUEUE_C] == 2 &&
	    cr.counters.states_published == 3);
	memset(&req, 0, sizeof(req));
	CHECK(aqm_llm_sysctl_counter(NULL, NULL,
	    __offsetof(struct aqm_counters, decisions_model), &req) == 0);
	CHECK(req.oldval == 3);

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

	CHECK(ioctl_(AQMLLM_DETACH, NULL) == 0);
	CHECK(aqm_llm_attached == NULL);
	instance_free(si);
}

static void
test_mmap_and_unload(void)
{
	struct dn_sch_inst *si = instance(5);
	vm_ooffset_t off = 0;
	vm_object_t obj;
	struct vm_page page = { 0, 0, 0, 0 }, *mres = &page;
	struct sysctl_req req;

	enqueue(si, packet4(1, 700));		/* left queued at teardown */
	CHECK(shim_module->evhand(NULL, MOD_UNLOAD, NULL) == EBUSY);
	instance_free(si);

	CHECK(aqm_llm_cdevsw.d_mmap_single(aqm_llm_cdev, &off,
	    round_page(aqm_llm_region_size) + 4096, &obj, 3) == EINVAL);
	CHECK(aqm_llm_cdevsw.d_mmap_single(aqm_llm_cdev, &off, 8192, &obj,
	    3) == 0);
	CHECK(aqm_llm_mapped == 1);
	CHECK(shim_module->evhand(NULL, MOD_UNLOAD, NULL) == EBUSY);
	CHECK(shim_pager_ops->cdev_pg_fault(obj, 4096, 3, &mres) == VM_PAGER_OK);
	CHECK(mres->phys_addr == (vm_paddr_t)(uintptr_t)aqm_llm_region + 4096);
	free(mres, NULL);
	mres = &page;
	CHECK(shim_pager_ops->cdev_pg_fault(obj, aqm_llm_region_size + 4096, 3,
	    &mres) == VM_PAGER_FAIL);
	shim_pager_ops->cdev_pg_dtor(obj->handle);

	/* Sysctl defaults are validated as a whole. */
	memset(&req, 0, sizeof(req));
	req.newptr = &req;
	req.newval = 0;
	CHECK(aqm_llm_sysctl_default(NULL, NULL,
	    __offsetof(struct aqm_params, coupling_factor), &req) == EINVAL);
	CHECK(aqm_llm_defaults.coupling_factor == 2);
	req.newval = 3;
	CHECK(aqm_llm_sysctl_default(NULL, NULL,
	    __offsetof(struct aqm_params, coupling_factor), &req) == 0);
	CHECK(aqm_llm_defaults.coupling_factor == 3);

	CHECK(shim_module->evhand(NULL, MOD_UNLOAD, NULL) == 0);
	CHECK(shim_dn_alg == NULL);
}

static void
test_out_of_memory(void)
{
	struct dn_sch_inst *si;
	struct dn_schk schk;
	int rc;

	CHECK(shim_module->evhand(NULL, MOD_LOAD, NULL) == 0);
	si = calloc(1, sizeof(*si) + shim_dn_alg->si_datalen);
	memset(&schk, 0, sizeof(schk));
	si->sched = &schk;
	shim_fail_malloc = 1;
	rc = shim_dn_alg->new_sched(si);
	shim_fail_malloc = 0;
	CHECK(rc == ENOMEM && aqm_llm_instances == 0);
	free(si, NULL);

	si = instance(6);
	shim_fail_malloc = 1;			/* no tag for this packet */
	CHECK(enqueue(si, packet4(1, 100)) == 1);
	shim_fail_malloc = 0;
	CHECK(((struct aqm_llm_si *)si)->st->core->qlen[AQM_QUEUE_L] == 0);
	instance_free(si);
	CHECK(shim_module->evhand(NULL, MOD_UNLOAD, NULL) == 0);
}

int
main(void)
{

	test_load();
	test_classification_and_step_marks();
	test_ipv4_mark_keeps_checksum();
	test_limits_and_params();
	test_verdicts_through_the_region();
	test_mmap_and_unload();
	test_out_of_memory();
	CHECK(live_mbufs == 0);
	printf("%d passed, %d failed\n", checks - failures, failures);
	return (failures != 0);
}
