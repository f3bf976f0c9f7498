/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_llm_ioctl.h: the ioctls of /dev/aqm_llm (see aqm_llm(4)).
 *
 * Schedulers are named by their dummynet number (`dnctl sched N config
 * ... type aqm_llm`); where several instances share a number (a mask, or
 * the same number in several VNETs), COUNTERS and GETPARAMS read the
 * oldest and SETPARAMS sets them all (and the scheduler's next states).
 */

#ifndef AQM_LLM_IOCTL_H
#define AQM_LLM_IOCTL_H

#include <sys/ioccom.h>

#include "aqm_channel.h"

/*
 * AQMLLM_INFO.  The region belongs to a scheduler number (AQMLLM_ATTACH) and
 * serves the oldest state of it (an instance's, or the one its scheduler
 * keeps while idle); each state that takes the region over bumps the
 * region header's producer_gen.
 */
struct aqm_llm_info {
	uint32_t abi_version;
	uint32_t state_ring_entries;
	uint32_t verdict_ring_entries;
	uint32_t instances;		/* live instances, all schedulers */
	uint64_t region_size;
	int32_t	 attached_sched;	/* the region's scheduler; -1: none */
	uint32_t sched_instances;	/* live instances of it (masks, VNETs) */
	uint64_t served_instance;	/* id of the state served; 0: none */
	uint64_t attach_ns;		/* uptime (ns) of the last take-over */
	uint32_t attach_count;		/* core attaches since load */
	uint32_t sched_configured;	/* aqm_llm schedulers of that number */
	uint64_t reserved;
};
AQM_STATIC_ASSERT(sizeof(struct aqm_llm_info) == 64, "aqm_llm_info ABI");

struct aqm_llm_counters_req {
	int32_t	 sched;
	uint32_t pad;
	uint64_t prob_base;
	struct aqm_counters counters;
};
AQM_STATIC_ASSERT(sizeof(struct aqm_llm_counters_req) == 264,
    "aqm_llm_counters_req ABI");

struct aqm_llm_params_req {
	int32_t	 sched;
	uint32_t pad;
	struct aqm_params params;
};
AQM_STATIC_ASSERT(sizeof(struct aqm_llm_params_req) == 72,
    "aqm_llm_params_req ABI");

#define	AQMLLM_INFO	_IOR('Q', 1, struct aqm_llm_info)
#define	AQMLLM_ATTACH	_IOW('Q', 2, int32_t)		/* scheduler number */
#define	AQMLLM_DETACH	_IO('Q', 3)
#define	AQMLLM_COUNTERS	_IOWR('Q', 4, struct aqm_llm_counters_req)
#define	AQMLLM_GETPARAMS _IOWR('Q', 5, struct aqm_llm_params_req)
#define	AQMLLM_SETPARAMS _IOWR('Q', 6, struct aqm_llm_params_req)

#endif /* !AQM_LLM_IOCTL_H */
