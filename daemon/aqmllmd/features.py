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


def _trend_values(states: np.ndarray) -> np.ndarray:
    soj = states["sojourn_ns"].astype(np.float64) / 1e6
    kbytes = states["backlog_bytes"].astype(np.float64).sum(axis=1) / 1e3
    return np.column_stack([soj[:, 0], soj[:, 1], kbytes,
                            (states["queue"] == 1).astype(np.float64)])


def _trailing_means(values: np.ndarray, tail: np.ndarray, n: int) -> np.ndarray:
    """Mean of the n rows before each row of `values`, `tail` being what came before."""
    full = np.vstack([tail, values])
    csum = np.vstack([np.zeros((1, full.shape[1])), np.cumsum(full, axis=0)])
    end = np.arange(len(tail), len(full))  # index of each new row in `full`
    start = np.maximum(end - n, 0)
    count = np.maximum(end - start, 1)[:, None]
    means = (csum[end] - csum[start]) / count
    means[end == start] = 0.0
    return means


def compute(states: np.ndarray, history: History | None = None) -> np.ndarray:
    """float32 [len(states), N_FEATURES]; updates `history` when given."""
    missing = set(STATE_DTYPE.names) - set(states.dtype.names or ())
    if missing:
        raise TypeError(f"state records lack fields {sorted(missing)}")
    tail = history.tail if history is not None else np.zeros((0, 4))
    trend = _trend_values(states)
    hist = _trailing_means(trend, tail, HISTORY_LEN)
    if history is not None:
        history.tail = np.vstack([tail, trend])[-HISTORY_LEN:]

    ecn = states["ecn"]
    wait_ms = (states["deadline_ns"].astype(np.int64)
               - states["ts_ns"].astype(np.int64)).clip(min=0) / 1e6
    cols = [
        states["queue"] == 1,
        ecn == 0, ecn == 1, ecn == 2, ecn == 3,
        states["len"],
        states["backlog_pkts"][:, 0], states["backlog_pkts"][:, 1],
        states["backlog_bytes"][:, 0] / 1e3, states["backlog_bytes"][:, 1] / 1e3,
        states["sojourn_ns"][:, 0] / 1e6, states["sojourn_ns"][:, 1] / 1e6,
        states["prob_base"] / PROB_ONE, states["prob_c"] / PROB_ONE,
        states["prob_cl"] / PROB_ONE,
        states["rate_bps"] * 8 / 1e6,
        wait_ms,
        hist[:, 0], hist[:, 1], hist[:, 2], hist[:, 3],
    ]
    return np.column_stack([np.asarray(c, dtype=np.float64) for c in cols]).astype(np.float32)
