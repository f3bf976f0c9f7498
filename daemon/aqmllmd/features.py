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
    "hist_c_not_ect_share",  # share of Not-ECT packets among their classic ones (0: none)
)
N_FEATURES = len(FEATURE_NAMES)
#: Per record, the values the history features sum: sojourn C, sojourn L, kB, L, classic,
#: classic Not-ECT.
_TREND = 6


@dataclass
class History:
    """The last HISTORY_LEN records' trend values, carried from batch to batch."""

    tail: np.ndarray = field(default_factory=lambda: np.zeros((0, _TREND), np.float64))


# How compute() reads a batch in few numpy operations (each costs about a microsecond
# whatever the batch size, which is what matters for small batches):
# - the 32-bit fields through one gather from a uint32 view of the records, each divided
#   into its feature's unit (offsets from the dtype, so this follows the ABI);
_U32_FIELDS = (  # (feature column, field, element, divisor)
    (5, "len", 0, 1.0),
    (6, "backlog_pkts", 0, 1.0), (7, "backlog_pkts", 1, 1.0),
    (8, "backlog_bytes", 0, 1e3), (9, "backlog_bytes", 1, 1e3),
    (10, "sojourn_ns", 0, 1e6), (11, "sojourn_ns", 1, 1e6),
    (12, "prob_base", 0, PROB_ONE), (13, "prob_c", 0, PROB_ONE), (14, "prob_cl", 0, PROB_ONE),
)
assert all(STATE_DTYPE.fields[f][0].base == np.uint32 and STATE_DTYPE.fields[f][1] % 4 == 0
           for _, f, _, _ in _U32_FIELDS) and STATE_DTYPE.itemsize % 8 == 0
_U32_WORDS = np.array([(STATE_DTYPE.fields[f][1] >> 2) + e for _, f, e, _ in _U32_FIELDS])
_U32_DIV = np.array([d for *_, d in _U32_FIELDS])
_U32_COLS = slice(5, 15)  # they fill these columns, in this order
_KB, _SOJ = slice(3, 5), slice(5, 7)  # kB and sojourns within the gathered block
# - the 64-bit ones through a uint64 view;
_U64_WORDS = np.array([STATE_DTYPE.fields[f][1] >> 3 for f in ("ts_ns", "deadline_ns",
                                                                  "rate_bps")])
assert all(STATE_DTYPE.fields[f][1] % 8 == 0 for f in ("ts_ns", "deadline_ns", "rate_bps"))
# - queue and ECN, adjacent bytes, as one 16-bit key into a table of the five columns
#   queue_l, ecn_* (built from the bytes in this machine's order; a value out of range
#   gives zeros, as `queue == 1` and `ecn == k` would).
assert STATE_DTYPE.fields["ecn"][1] == STATE_DTYPE.fields["queue"][1] + 1
assert STATE_DTYPE.fields["queue"][1] % 2 == 0
_QE_WORD = STATE_DTYPE.fields["queue"][1] >> 1
_qe = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
_QE_TABLE = np.zeros((1 << 16, 5), np.float32)
_QE_TABLE[:, 0] = _qe[:, 0] == 1
_QE_TABLE[:, 1:5] = _qe[:, 1:2] == np.arange(4)  # Not-ECT, ECT(1), ECT(0), CE
del _qe
_NO_TAIL = np.zeros((0, _TREND))
_WORDS32 = STATE_DTYPE.itemsize // 4


def _as_records(states: np.ndarray) -> np.ndarray:
    """A contiguous STATE_DTYPE array with the same records (copied by field name)."""
    if states.dtype == STATE_DTYPE and states.flags.c_contiguous:
        return states
    missing = set(STATE_DTYPE.names) - set(states.dtype.names or ())
    if missing:
        raise TypeError(f"state records lack fields {sorted(missing)}")
    out = np.empty(len(states), STATE_DTYPE)
    for name in STATE_DTYPE.names:
        out[name] = states[name]
    return out


def compute(states: np.ndarray, history: History | None = None) -> np.ndarray:
    """float32 [len(states), N_FEATURES]; updates `history` when given.

    `states`: state records (STATE_DTYPE, or any structured array with its fields), in
    arrival order; the history runs from each record to the next and, through
    `history`, from one call to the next.
    """
    if states.dtype.names is None:
        raise TypeError("state records must be a structured array (aqm_bridge.abi.STATE_DTYPE)")
    states = _as_records(states)
    n = len(states)
    out = np.empty((n, N_FEATURES), np.float32)
    block = states.view(np.uint32).reshape(n, _WORDS32)[:, _U32_WORDS] / _U32_DIV
    out[:, _U32_COLS] = block
    qe = _QE_TABLE[states.view(np.uint16).reshape(n, 2 * _WORDS32)[:, _QE_WORD]]
    out[:, 0:5] = qe
    ts, deadline, rate = states.view(np.uint64).reshape(n, _WORDS32 // 2)[:, _U64_WORDS].T
    out[:, 15] = rate * (8 / 1e6)
    out[:, 16] = np.maximum(deadline.view(np.int64) - ts.view(np.int64), 0) / 1e6

    # History over the HISTORY_LEN records before each one, across batches, from a
    # running sum over [the previous tail; this batch] of the _TREND values: means of the
    # first four, and the classic records' Not-ECT share.
    tail = history.tail if history is not None else _NO_TAIL
    k = len(tail)
    full = np.empty((k + n, _TREND))
    full[:k] = tail
    full[k:, 0:2] = block[:, _SOJ]
    full[k:, 2] = block[:, _KB].sum(axis=1)
    full[k:, 3] = qe[:, 0]
    full[k:, 4] = 1.0 - qe[:, 0]
    full[k:, 5] = full[k:, 4] * qe[:, 1]
    csum = np.empty((k + n + 1, _TREND))
    csum[0] = 0
    np.cumsum(full, axis=0, out=csum[1:])
    if k == HISTORY_LEN:  # steady state: every record has a full window
        window = csum[k:k + n] - csum[:n]
        out[:, 17:21] = window[:, :4] / HISTORY_LEN
    else:
        end = np.arange(k, k + n)
        start = np.maximum(end - HISTORY_LEN, 0)
        window = csum[end] - csum[start]
        out[:, 17:21] = window[:, :4] / np.maximum(end - start, 1)[:, None]
    out[:, 21] = window[:, 5] / np.maximum(window[:, 4], 1.0)
    if history is not None:
        history.tail = full[-HISTORY_LEN:].copy()
    return out
