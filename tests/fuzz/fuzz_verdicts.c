/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * fuzz_verdicts.c: the data path as consumer of a hostile daemon.
 *
 * The input is a program of operations on a region the core is attached
 * to: verdict records with any contents, ring indices set to any value,
 * header and control block bytes scribbled over, flags toggled,
 * interleaved with enqueues, dequeues and ticks.  AddressSanitizer checks
 * that nothing is read out of bounds; the invariants check that every
 * packet still gets exactly one decision.
 */

#include "fuzz_common.h"

#define SE	64u
#define VE	64u

static uint8_t region[65536] __attribute__((aligned(64)));

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_host h;
	static struct aqm_core *core;
	struct fuzz_in in = { data, size };
	struct aqm_params p;
	struct aqm_chan ch;
	struct aqm_verdict_rec *v;
	uint64_t rsize = aqm_chan_region_size(SE, VE), off;
	uint32_t *word;
	int steps;

	if (core == NULL)
		core = malloc(aqm_core_size());
	memset(&h, 0, sizeof(h));
	memset(region, 0, sizeof(region));
	h.core = core;
	aqm_params_default(&p);
	p.limit_pkts = FQ_CAP - 8;
	FUZZ_CHECK(aqm_core_init(core, &p, 1, 0) == AQM_OK);
	FUZZ_CHECK(aqm_chan_init(&ch, region, rsize, SE, VE) == AQM_CHAN_OK);
	FUZZ_CHECK(aqm_attach(core, region, rsize, 0) == AQM_OK);

	for (steps = 0; in.n != 0 && steps < 4096; steps++) {
		h.now += fuzz_take(&in, 2) * 1000;
		switch (fuzz_take(&in, 1) % 10) {
		case 0:		/* a verdict record, published */
			v = &ch.verdicts[ch.verdict_prod & ch.verdict_mask];
			v->seq = fuzz_take(&in, 1) % 4 == 0 ?
			    fuzz_take(&in, 8) : fuzz_take(&in, 1);
			v->action = fuzz_take(&in, 1) % 5 == 0 ?
			    (uint32_t)fuzz_take(&in, 4) : (uint32_t)fuzz_take(&in, 1) % 3;
			ch.verdict_prod++;
			aqm_store_release(&ch.idx[AQM_IDX_VERDICT_PROD].value,
			    ch.verdict_prod);
			break;
		case 1:		/* any ring index to any value */
			aqm_store_release(
			    &ch.idx[fuzz_take(&in, 1) % AQM_NINDICES].value,
			    (uint32_t)fuzz_take(&in, 4));
			break;
		case 2:		/* scribble anywhere in the region */
			off = fuzz_take(&in, 2) % (rsize / 4);
			word = (uint32_t *)(void *)(region + off * 4);
			*word = (uint32_t)fuzz_take(&in, 4);
			break;
		case 3:		/* a parameter request with any contents */
			off = fuzz_take(&in, 1) % (sizeof(struct aqm_params) / 4);
			((uint32_t *)(void *)&ch.ctrl->params)[off] =
			    (uint32_t)fuzz_take(&in, 4);
			ch.ctrl->param_req++;
			break;
		case 4:
		case 5:
			fuzz_host_enqueue(&h, 1 + (uint32_t)fuzz_take(&in, 2) % 9000,
			    (uint8_t)fuzz_take(&in, 1));
			break;
		case 6:
		case 7:
			fuzz_host_dequeue(&h);
			break;
		case 8:
			aqm_tick(core, h.now);
			break;
		case 9:		/* the daemon drains states */
			{
				struct aqm_state_rec out[8];

				(void)aqm_state_pop_batch(&ch, out, 8);
			}
			break;
		}
		fuzz_host_check(&h);
	}
	while (h.len[0] + h.len[1] != 0) {
		h.now += 1000;
		fuzz_host_dequeue(&h);
	}
	fuzz_host_check(&h);
	aqm_detach(core);
	return (0);
}
