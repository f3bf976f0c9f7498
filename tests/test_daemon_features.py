"""The feature pipeline against a record-by-record reference written from the README's
feature table: the vectorised code must say the same thing, whatever the batching."""

from __future__ import annotations

import numpy as np
import pytest

from aqm_bridge.abi import STATE_DTYPE
from aqmllmd import features

PROB_ONE = 0xFFFFFFFF


def random_states(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros(n, STATE_DTYPE)
    s["seq"] = np.arange(n) + 10**12
    s["ts_ns"] = 10**15 + np.cumsum(rng.integers(0, 10**5, n))
    # Some deadlines before their arrival (wait clamps to 0), most after.
    s["deadline_ns"] = s["ts_ns"] + rng.integers(-10**6, 10**8, n)
    s["rate_bps"] = rng.integers(0, 10**11, n)
    s["len"] = rng.integers(40, 65536, n)
    s["queue"] = rng.integers(0, 3, n)  # 2: out of range, neither queue
    s["ecn"] = rng.integers(0, 6, n)  # 4, 5: out of range, no codepoint
    s["flags"] = rng.integers(0, 1 << 16, n)
    s["backlog_pkts"] = rng.integers(0, 2**32, (n, 2))
    s["backlog_bytes"] = rng.integers(0, 2**32, (n, 2))
    s["sojourn_ns"] = rng.integers(0, 2**32, (n, 2))
    for f in ("prob_base", "prob_c", "prob_cl"):
        s[f] = rng.integers(0, 2**32, n)
    return s


def reference(states: np.ndarray) -> np.ndarray:
    """One record at a time, in plain Python, straight from the feature table."""
    rows, trend = [], []
    for r in states:
        soj = [int(r["sojourn_ns"][q]) / 1e6 for q in (0, 1)]
        kb = [int(r["backlog_bytes"][q]) / 1e3 for q in (0, 1)]
        prev = trend[-features.HISTORY_LEN:]
        hist = [sum(t[i] for t in prev) / len(prev) if prev else 0.0 for i in range(4)]
        classic = [t for t in prev if not t[3]]
        not_ect_share = (sum(t[4] for t in classic) / len(classic)) if classic else 0.0
        rows.append([
            float(r["queue"] == 1), *(float(r["ecn"] == k) for k in range(4)),
            float(r["len"]), float(r["backlog_pkts"][0]), float(r["backlog_pkts"][1]),
            *kb, *soj,
            int(r["prob_base"]) / PROB_ONE, int(r["prob_c"]) / PROB_ONE,
            int(r["prob_cl"]) / PROB_ONE,
            int(r["rate_bps"]) * 8 / 1e6,
            max(int(r["deadline_ns"]) - int(r["ts_ns"]), 0) / 1e6,
            *hist, not_ect_share])
        trend.append((soj[0], soj[1], kb[0] + kb[1], float(r["queue"] == 1),
                      float(r["ecn"] == 0)))
    return np.array(rows, np.float32).reshape(len(states), features.N_FEATURES)


@pytest.mark.parametrize("seed", range(3))
def test_matches_the_record_by_record_reference(seed: int) -> None:
    s = random_states(300, seed)
    want = reference(s)
    np.testing.assert_allclose(features.compute(s), want, rtol=1e-6, atol=1e-9)
    # Any batching, history carried across calls: the same values.
    h = features.History()
    cuts = [0, 1, 2, 17, 40, 41, 200, 300]
    got = np.vstack([features.compute(s[a:b], h) for a, b in zip(cuts, cuts[1:], strict=False)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_other_layouts_are_read_by_field_name() -> None:
    s = random_states(50, 7)
    want = features.compute(s)
    np.testing.assert_array_equal(features.compute(s[::-1].copy()[::-1]), want)  # strided
    # The same fields in another order, plus one more: matched by name.
    names = list(reversed(STATE_DTYPE.names)) + ["extra"]
    other = np.zeros(len(s), [(n, STATE_DTYPE.fields[n][0]) for n in names[:-1]]
                     + [("extra", "f8")])
    for n in STATE_DTYPE.names:
        other[n] = s[n]
    np.testing.assert_array_equal(features.compute(other), want)


def test_refuses_what_is_not_state_records() -> None:
    with pytest.raises(TypeError, match="lack fields"):
        features.compute(np.zeros(3, [("seq", "u8")]))
    with pytest.raises(TypeError, match="structured"):
        features.compute(np.zeros((3, 20), np.uint32))


def test_classic_not_ect_share() -> None:
    """The share of Not-ECT among the classic records of the window, L records aside:
    what tells an L4S packet whether the classic flows beside it can take marks."""
    s = np.zeros(40, STATE_DTYPE)
    s["queue"] = [1, 0] * 20  # L and classic in turn
    s["ecn"] = [1, 0, 1, 2] * 10  # classic: Not-ECT, ECT(0), Not-ECT, ...
    x = features.compute(s)
    col = features.FEATURE_NAMES.index("hist_c_not_ect_share")
    assert x[0, col] == 0.0  # no history
    assert x[1, col] == 0.0  # only an L record before it
    assert x[2, col] == 1.0  # one classic record before it, Not-ECT
    np.testing.assert_allclose(x[20:, col], 0.5)
    s["queue"] = 1
    assert not features.compute(s)[:, col].any()  # no classic records: 0


def test_empty_batch() -> None:
    h = features.History()
    assert features.compute(np.zeros(0, STATE_DTYPE), h).shape == (0, features.N_FEATURES)
    assert len(h.tail) == 0
