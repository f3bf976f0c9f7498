/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_chan_lib.c: the channel's batch operations, exported for bindings.
 *
 * Python (aqm_bridge.channel) calls these through cffi so that a whole batch
 * of records crosses the language boundary in one call, with the same
 * acquire/release ordering as every C user of aqm_channel.h.  Pointers are
 * void * here so the binding needs no struct declarations beyond sizes.
 */

#include "aqm_channel.h"

#define SEQLOCK_TRIES	1000

uint64_t aqm_chan_handle_size(void);
uint64_t aqm_chan_region_bytes(uint32_t, uint32_t);
int	aqm_chan_layout(void *, void *, uint64_t, uint32_t, uint32_t);
int	aqm_chan_attach_view(void *, void *, uint64_t);
int64_t	aqm_chan_pending_states(void *);
int64_t	aqm_chan_read_states(void *, void *, uint32_t);
int64_t	aqm_chan_write_verdicts(void *, const uint64_t *, const uint32_t *,
	    uint32_t, uint32_t);
int	aqm_chan_read_ctrl(void *, void *, void *, uint64_t *, uint64_t *);
uint32_t aqm_chan_request_params(void *, const void *);
int	aqm_chan_poll_params(void *, uint32_t, int32_t *);
int	aqm_chan_params_pending(void *);
uint32_t aqm_chan_get_flags(void *);
void	aqm_chan_change_flags(void *, uint32_t, uint32_t);
void	aqm_chan_set_index(void *, uint32_t, uint32_t);
const char *aqm_chan_strerror(int);

uint64_t
aqm_chan_handle_size(void)
{

	return (sizeof(struct aqm_chan));
}

uint64_t
aqm_chan_region_bytes(uint32_t state_entries, uint32_t verdict_entries)
{

	return (aqm_chan_region_size(state_entries, verdict_entries));
}

int
aqm_chan_layout(void *handle, void *base, uint64_t size, uint32_t se,
    uint32_t ve)
{

	return (aqm_chan_init(handle, base, size, se, ve));
}

int
aqm_chan_attach_view(void *handle, void *base, uint64_t size)
{

	return (aqm_chan_open(handle, base, size));
}

int64_t
aqm_chan_pending_states(void *handle)
{
	struct aqm_chan *ch = handle;
	uint32_t prod;
	int64_t n;

	prod = aqm_load_acquire(&ch->idx[AQM_IDX_STATE_PROD].value);
	n = aqm_ring_pending(prod, ch->state_cons, ch->state_mask);
	return (n < 0 ? AQM_CHAN_ECORRUPT : n);
}

int64_t
aqm_chan_read_states(void *handle, void *out, uint32_t max)
{

	return (aqm_state_pop_batch(handle, out, max));
}

/* Verdicts from two parallel arrays, built straight into the ring. */
int64_t
aqm_chan_write_verdicts(void *handle, const uint64_t *seq,
    const uint32_t *action, uint32_t model_tag, uint32_t n)
{
	struct aqm_chan *ch = handle;
	struct aqm_verdict_rec *v;
	int64_t fit = aqm_verdict_reserve(ch, n);
	uint32_t i;

	for (i = 0; i < (uint32_t)(fit > 0 ? fit : 0); i++) {
		v = aqm_verdict_slot(ch, i);
		v->seq = seq[i];
		v->action = action[i];
		v->model_tag = model_tag;
	}
	if (fit > 0)
		aqm_verdict_publish(ch, (uint32_t)fit);
	return (fit);
}

/*
 * A consistent copy of the published counters and parameters: retry while
 * the data path is writing (odd generation) or wrote meanwhile.  Returns 0,
 * or -1 when no consistent copy could be had.
 */
int
aqm_chan_read_ctrl(void *handle, void *counters, void *current,
    uint64_t *now_ns, uint64_t *prob_base)
{
	struct aqm_chan *ch = handle;
	struct aqm_chan_ctrl *ctrl = ch->ctrl;
	uint32_t g1, g2;
	int tries;

	for (tries = 0; tries < SEQLOCK_TRIES; tries++) {
		g1 = aqm_load_acquire(&ctrl->counters_gen);
		if (g1 & 1)
			continue;
		*(struct aqm_counters *)counters = ctrl->counters;
		*(struct aqm_params *)current = ctrl->current;
		*now_ns = ctrl->now_ns;
		*prob_base = ctrl->prob_base;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		g2 = __atomic_load_n(&ctrl->counters_gen, __ATOMIC_RELAXED);
		if (g1 == g2)
			return (0);
	}
	return (-1);
}

/*
 * Post a parameter request; returns its number for aqm_chan_poll_params.
 * The number is taken with one atomic increment (release: the parameters
 * are visible before it), so two requesters never get the same one.
 */
uint32_t
aqm_chan_request_params(void *handle, const void *params)
{
	struct aqm_chan *ch = handle;
	struct aqm_chan_ctrl *ctrl = ch->ctrl;

	ctrl->params = *(const struct aqm_params *)params;
	return (__atomic_add_fetch(&ctrl->param_req, 1, __ATOMIC_RELEASE));
}

/* 1 and *result when the data path answered request req, else 0. */
int
aqm_chan_poll_params(void *handle, uint32_t req, int32_t *result)
{
	struct aqm_chan *ch = handle;

	if (aqm_load_acquire(&ch->ctrl->param_ack) != req)
		return (0);
	*result = __atomic_load_n(&ch->ctrl->param_result, __ATOMIC_RELAXED);
	return (1);
}

/*
 * 1 while a request is posted and not yet answered: its parameters may be
 * being copied by the data path, so a new request must not overwrite them.
 */
int
aqm_chan_params_pending(void *handle)
{
	struct aqm_chan *ch = handle;

	return (aqm_load_acquire(&ch->ctrl->param_ack) !=
	    aqm_load_acquire(&ch->ctrl->param_req));
}

uint32_t
aqm_chan_get_flags(void *handle)
{
	struct aqm_chan *ch = handle;

	return (aqm_load_acquire(&ch->hdr->flags));
}

void
aqm_chan_change_flags(void *handle, uint32_t set, uint32_t clear)
{
	struct aqm_chan *ch = handle;

	if (set != 0)
		__atomic_fetch_or(&ch->hdr->flags, set, __ATOMIC_RELEASE);
	if (clear != 0)
		__atomic_fetch_and(&ch->hdr->flags, ~clear, __ATOMIC_RELEASE);
}

/* Tests only: move a shared ring index as a buggy or hostile peer would. */
void
aqm_chan_set_index(void *handle, uint32_t which, uint32_t value)
{
	struct aqm_chan *ch = handle;

	if (which < AQM_NINDICES)
		aqm_store_release(&ch->idx[which].value, value);
}

const char *
aqm_chan_strerror(int code)
{

	switch (code) {
	case AQM_CHAN_OK:
		return ("no error");
	case AQM_CHAN_ESIZE:
		return ("region too small for its header, or ring sizes not powers "
		    "of two in range");
	case AQM_CHAN_EMAGIC:
		return ("bad magic: not an AQM-LLM channel region");
	case AQM_CHAN_EABI:
		return ("ABI version or record sizes differ from this build");
	case AQM_CHAN_EGEOMETRY:
		return ("ring offsets disagree with the ring sizes");
	case AQM_CHAN_ECORRUPT:
		return ("ring index beyond the ring: corrupted region");
	default:
		return ("unknown channel error");
	}
}
