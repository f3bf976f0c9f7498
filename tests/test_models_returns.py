"""Interval returns: each 100 ms scored as the gate scores a run, relative to DualPI2."""

from __future__ import annotations

import numpy as np
import pytest

from aqm_bridge.abi import STATE_DTYPE
from aqmllm_models import data


def series(util: list[float], p99_c: float = 10.0, p99_l: float = 1.0,
           tput: tuple[float, float] = (5.0, 5.0)) -> dict[str, np.ndarray]:
    """The ts_* columns of one run at 10 Mbit/s (sim/DATASET.md)."""
    n = len(util)
    return {"ts_run": np.zeros(n, np.uint16), "ts_time_s": 0.1 * (np.arange(n) + 1),
            "ts_capacity_mbps": np.full(n, 10.0), "ts_link_mbps": 10.0 * np.array(util),
            "ts_tput_mbps_0": np.full(n, tput[0]), "ts_tput_mbps_1": np.full(n, tput[1]),
            "ts_sojourn_p99_ms_c": np.full(n, p99_c), "ts_sojourn_p99_ms_l": np.full(n, p99_l)}


def test_the_score_values_the_link_fairness_and_both_tails() -> None:
    base = data.interval_scores(series([1.0, 1.0]), 0)
    assert base == pytest.approx(data.W_UTIL + data.W_JAIN
                                 - data.W_TAIL * (np.log(10 / 1.0) + np.log(1 / 0.25)))
    lost = data.interval_scores(series([0.99, 0.99]), 0)
    assert base - lost == pytest.approx(0.01 * data.W_UTIL)  # 1 % of the link: 0.2
    unfair = data.interval_scores(series([1.0, 1.0], tput=(10.0, 0.0)), 0)
    assert base - unfair == pytest.approx(0.5 * data.W_JAIN)
    shorter = data.interval_scores(series([1.0, 1.0], p99_c=5.0), 0)
    assert shorter - base == pytest.approx(data.W_TAIL * np.log(2))
    # Under the floor a shorter tail is worth nothing; an idle queue scores the floor.
    assert data.interval_scores(series([1.0], p99_l=0.1), 0) == pytest.approx(
        data.interval_scores(series([1.0], p99_l=0.0), 0))


def packets(n: int, spacing_ns: int) -> dict[str, np.ndarray]:
    s = np.zeros(n, STATE_DTYPE)
    s["seq"] = np.arange(n)
    s["ts_ns"] = np.arange(n) * spacing_ns
    s["len"] = 1500
    cols = {name: s[name] for name in STATE_DTYPE.names}
    cols["action"] = np.zeros(n, np.uint8)
    cols["packet_sojourn_ns"] = np.zeros(n, np.int64)
    return cols


def test_each_packet_takes_the_return_of_the_interval_it_arrived_in() -> None:
    adv = np.array([0.0, 0.0, 1.0, 0.0])  # better than DualPI2 in the third interval only
    steps = data.from_columns(packets(40, 10_000_000), [40], [adv])  # 10 per interval
    g = data.INTERVAL_GAMMA
    assert steps.returns[:10] == pytest.approx(np.full(10, g * g))
    assert steps.returns[10:20] == pytest.approx(np.full(10, g))
    assert steps.returns[20:30] == pytest.approx(np.ones(10))
    assert steps.returns[30:] == pytest.approx(np.zeros(10))
    assert steps.rewards[20:30] == pytest.approx(np.ones(10))
