/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * fuzz_chan_open.c: validation of a region someone else laid out.
 *
 * The input is the region itself, in a buffer of exactly its size so that
 * AddressSanitizer flags any read past it.  A region that aqm_chan_open()
 * accepts is then used from both sides.
 */

#include "fuzz_common.h"

int	LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct aqm_core *core;
	struct aqm_state_rec s[4];
	struct aqm_verdict_rec v[4];
	struct aqm_pkt pkt;
	struct aqm_decision d;
	struct aqm_chan ch;
	uint8_t *buf;
	int rc;

	if (size > (1u << 20))
		return (0);
	if (core == NULL)
		core = malloc(aqm_core_size());
	buf = aligned_alloc(64, (size + 63) & ~(size_t)63);
	FUZZ_CHECK(buf != NULL);
	memcpy(buf, data, size);
	rc = aqm_chan_open(&ch, buf, size);
	FUZZ_CHECK(rc <= 0 && rc >= AQM_CHAN_ECORRUPT);
	if (rc == AQM_CHAN_OK) {
		FUZZ_CHECK(aqm_chan_region_size(ch.state_mask + 1,
		    ch.verdict_mask + 1) <= size);
		(void)aqm_state_pop_batch(&ch, s, 4);
		(void)aqm_verdict_pop_batch(&ch, v, 4);
		(void)aqm_verdict_push_batch(&ch, v, 4);
		FUZZ_CHECK(aqm_core_init(core, NULL, 3, 0) == AQM_OK);
		FUZZ_CHECK(aqm_attach(core, buf, size, 0) == AQM_OK);
		if (aqm_enqueue(core, 10, 100, AQM_ECN_ECT1, &pkt) == AQM_V_PASS)
			aqm_dequeue(core, 20, &pkt, 0, &d);
		aqm_tick(core, 30);
		aqm_detach(core);
	}
	free(buf);
	return (0);
}
