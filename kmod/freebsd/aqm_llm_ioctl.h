/*-
 * SPDX-License-Identifier: BSD-2-Clause
 *
 * aqm_llm_ioctl.h: the ioctls of /dev/aqm_llm (see aqm_llm(4)).
 *
 * Scheduler instances are named by their dummynet scheduler number
 * (`dnctl sched N config ... type aqm_llm`).
 */

#ifndef AQM_LLM_IOCTL_H
#define AQM_LLM_IOCTL_H

#include <sys/ioccom.h>

#include "aqm_channel.h"

struct aqm_llm_info {
	uint32_t abi_version;
	uint32_t state_ring_entries;
	uint32_t verdict_ring_entries;
	uint32_t instances;
	uint64_t region_size;
	int32_t	 attached_sched;	/* -1: none */
	uint32_t pad;
};
AQM_STATIC_ASSERT(sizeof(struct aqm_llm_info) == 32, "aqm_llm_info ABI");

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
#define	AQMLLM_ATTACH	_IOW('Q', 2, int32_t)		/* sched number */
#define	AQMLLM_DETACH	_IO('Q', 3)
#define	AQMLLM_COUNTERS	_IOWR('Q', 4, struct aqm_llm_counters_req)
#define	AQMLLM_GETPARAMS _IOWR('Q', 5, struct aqm_llm_params_req)
#define	AQMLLM_SETPARAMS _IOWR('Q', 6, struct aqm_llm_params_req)

#endif /* !AQM_LLM_IOCTL_H */
