"""numpy views of the channel's records (bridge/aqm_channel.h).

Offsets are explicit so a layout change in C cannot be absorbed silently:
tests/test_abi.py checks every field against the compiled library.
"""

from __future__ import annotations

import numpy as np

ABI_VERSION = 2
MAGIC = 0x4C4D5141

QUEUE_C, QUEUE_L = 0, 1
ACT_ENQUEUE, ACT_DROP, ACT_MARK = 0, 1, 2
ACTIONS = ("enqueue", "drop", "mark")
#: aqm_params.verdict_guard (AQM_GUARD_*): what DualPI2 still decides over a verdict.
#: DualPI2's whole decision includes its step.
VERDICT_GUARDS = {"none": 0, "step": 1, "dualpi2": 2}

FLAG_PAUSED = 0x1
FLAG_PRODUCER_UP = 0x2
FLAG_CONSUMER_UP = 0x4
STATE_FLAG_FIRST = 0x1

# Which index lives on which cache line (tests move them as a hostile peer would).
IDX_STATE_PROD, IDX_STATE_CONS, IDX_VERDICT_PROD, IDX_VERDICT_CONS = 0, 1, 2, 3

STATE_DTYPE = np.dtype(
    {
        "names": [
            "seq", "ts_ns", "deadline_ns", "rate_bps", "len", "queue", "ecn", "flags",
            "backlog_pkts", "backlog_bytes", "sojourn_ns", "prob_base", "prob_c", "prob_cl",
        ],
        "formats": [
            "<u8", "<u8", "<u8", "<u8", "<u4", "u1", "u1", "<u2",
            ("<u4", 2), ("<u4", 2), ("<u4", 2), "<u4", "<u4", "<u4",
        ],
        "offsets": [0, 8, 16, 24, 32, 36, 37, 38, 40, 48, 56, 64, 68, 72],
        "itemsize": 80,
    }
)

VERDICT_DTYPE = np.dtype(
    {
        "names": ["seq", "action", "model_tag"],
        "formats": ["<u8", "<u4", "<u4"],
        "offsets": [0, 8, 12],
        "itemsize": 16,
    }
)
