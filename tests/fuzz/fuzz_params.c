/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * fuzz_params.c: the parameter setter, directly and through the mailbox.
 *
 * A refused parameter set must change nothing; an accepted one must read
 * back as given; the core must keep deciding either way.
 */

#include "fuzz_common.h"

static uint8_t region[32768] __attribute__((aligned(64)));

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
exercise(struct fuzz_host *h, struct fuzz_in *in)
{
	int i;

	for (i = 0; i < 16; i++) {
		h->now += 1 + fuzz_take(in, 3) * 64;
		fuzz_host_enqueue(h, 1 + (uint32_t)fuzz_take(in, 2) % 1600,
		    (uint8_t)i);
		if (i & 1)
			fuzz_host_dequeue(h);
	}
	fuzz_host_check(h);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_host h;
	static struct aqm_core *core;
	struct fuzz_in in = { data, size };
	struct aqm_params req, before, after;
	struct aqm_chan ch;
	uint64_t rsize = aqm_chan_region_size(64, 64);
	uint32_t *w;
	unsigned i;
	int rc, round;

	if (core == NULL)
		core = malloc(aqm_core_size());
	memset(&h, 0, sizeof(h));
	h.core = core;
	FUZZ_CHECK(aqm_core_init(core, NULL, 7, 0) == AQM_OK);
	memset(region, 0, sizeof(region));
	FUZZ_CHECK(aqm_chan_init(&ch, region, rsize, 64, 64) == AQM_CHAN_OK);
	FUZZ_CHECK(aqm_attach(core, region, rsize, 0) == AQM_OK);

	for (round = 0; round < 8 && in.n != 0; round++) {
		/* Start from what is in force, change some words. */
		aqm_core_get_params(core, &req);
		w = (uint32_t *)(void *)&req;
		for (i = fuzz_take(&in, 1) % 4; i < 12; i += 1 + fuzz_take(&in, 1) % 6)
			w[i] = (uint32_t)fuzz_take(&in, 4) >> (fuzz_take(&in, 1) % 32);
		aqm_core_get_params(core, &before);
		if (fuzz_take(&in, 1) & 1) {
			rc = aqm_core_set_params(core, &req);
		} else {
			ch.ctrl->params = req;
			ch.ctrl->param_req++;
			aqm_tick(core, h.now);
			FUZZ_CHECK(ch.ctrl->param_ack == ch.ctrl->param_req);
			rc = ch.ctrl->param_result;
		}
		FUZZ_CHECK(rc == aqm_params_validate(&req));
		aqm_core_get_params(core, &after);
		if (rc == AQM_OK)
			FUZZ_CHECK(memcmp(&after, &req, sizeof(req)) == 0);
		else
			FUZZ_CHECK(memcmp(&after, &before, sizeof(req)) == 0);
		exercise(&h, &in);
	}
	aqm_detach(core);
	return (0);
}
