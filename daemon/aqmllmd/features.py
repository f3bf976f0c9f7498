"""The one feature pipeline: state records (plus recent history) -> model inputs.

Serving (aqmllmd) and training (aqmllm_models) both call this module, so the two can
never disagree. Values are raw, in the units named; normalisation lives inside each
model's graph.

The history features summarise the records that came just before each record, across
batches: the daemon keeps a `History` per channel and passes it along.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aqm_bridge.abi import STATE_DTYPE

PROB_ONE = float(0xFFFFFFFF)
#: Records of history averaged for the trend features.
HISTORY_LEN = 16

FEATURE_NAMES: tuple[str, ...] = (
    "queue_l",  # 1 for the L queue
    "ecn_not_ect", "ecn_ect1", "ecn_ect0", "ecn_ce",
    "len_bytes",
    "backlog_pkts_c", "backlog_pkts_l",
    "backlog_kbytes_c", "backlog_kbytes_l",
    "sojourn_ms_c", "sojourn_ms_l",  # head of line when the packet arrived
    "prob_base", "prob_c", "prob_cl",
    "rate_mbps",
    "expected_wait_ms",  # deadline - arrival: the data path's estimate of the sojourn
    "hist_sojourn_ms_c", "hist_sojourn_ms_l",  # mean over the previous HISTORY_LEN records
    "hist_backlog_kbytes",
    "hist_l_share",  # share of L packets among them
)
N_FEATURES = len(FEATURE_NAMES)


@dataclass
class History:
    """The last HISTORY_LEN records' trend values, carried from batch to batch."""

    tail: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float64))


def compute(states: np.ndarray, history: History | None = None) -> np.ndarray:
    """float32 [len(states), N_FEATURES]; updates `history` when given."""
    missing = set(STATE_DTYPE.names) - set(states.dtype.names or ())
    if missing:
        raise TypeError(f"state records lack fields {sorted(missing)}")
    n = len(states)
    out = np.empty((n, N_FEATURES), np.float32)
    queue, ecn = states["queue"], states["ecn"]
    soj_ms = states["sojourn_ns"] / 1e6
    kbytes = states["backlog_bytes"] / 1e3
    out[:, 0] = queue == 1
    out[:, 1:5] = ecn[:, None] == np.arange(4)  # Not-ECT, ECT(1), ECT(0), CE
    out[:, 5] = states["len"]
    out[:, 6:8] = states["backlog_pkts"]
    out[:, 8:10] = kbytes
    out[:, 10:12] = soj_ms
    out[:, 12] = states["prob_base"] / PROB_ONE
    out[:, 13] = states["prob_c"] / PROB_ONE
    out[:, 14] = states["prob_cl"] / PROB_ONE
    out[:, 15] = states["rate_bps"] * (8 / 1e6)
    wait = states["deadline_ns"].astype(np.int64) - states["ts_ns"].astype(np.int64)
    out[:, 16] = np.maximum(wait, 0) / 1e6

    # History: mean of the HISTORY_LEN records before each one, across batches.
    trend = np.empty((n, 4))
    trend[:, 0:2] = soj_ms
    trend[:, 2] = kbytes.sum(axis=1)
    trend[:, 3] = queue == 1
    tail = history.tail if history is not None else np.zeros((0, 4))
    full = np.concatenate([tail, trend]) if len(tail) else trend
    csum = np.zeros((len(full) + 1, 4))
    np.cumsum(full, axis=0, out=csum[1:])
    end = np.arange(len(tail), len(full))
    start = np.maximum(end - HISTORY_LEN, 0)
    count = np.maximum(end - start, 1)[:, None]
    out[:, 17:21] = (csum[end] - csum[start]) / count
    if history is not None:
        history.tail = full[-HISTORY_LEN:].copy()
    return out
