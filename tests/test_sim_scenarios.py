"""Scenario features on ns-3: trace replay, per-flow ECN, short flows, time series, progress."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from aqmllm_sim.runner import run
from aqmllm_sim.scenario import parse

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ns3") is None,
                                reason="the ns3 wheel (sim extra) is not installed")

PAIR = [{"cc": "dctcp", "rtt_ms": 20}, {"cc": "cubic", "rtt_ms": 20}]


def test_a_mahimahi_trace_is_replayed_opportunity_by_opportunity(tmp_path: Path) -> None:
    # 2 opportunities per ms (24 Mbit/s) for 1 s, then 3 per ms (36 Mbit/s); looped.
    lines = [str(ms) for ms in range(1, 1001) for _ in range(2)] + \
            [str(ms) for ms in range(1001, 2001) for _ in range(3)]
    (tmp_path / "t.mahimahi").write_text("\n".join(lines) + "\n")
    sc = parse({"duration_s": 4, "trace": "t.mahimahi", "flows": PAIR}, base=tmp_path)
    r = run(sc, "dualpi2", tmp_path / "out", plots=False)
    assert r["capacity_mbps"] == pytest.approx(30.0, rel=0.01)
    assert r["utilisation"] > 0.9
    ts = np.genfromtxt(tmp_path / "out" / "timeseries.csv", delimiter=",", names=True)
    # The link never carries more than the trace offers, and follows it.
    assert (ts["link_mbps"] <= ts["capacity_mbps"] + 0.5).all()
    busy = ts["time_s"] > 0.5
    assert np.median(ts["link_mbps"][busy] / ts["capacity_mbps"][busy]) > 0.95
    slow, fast = ts["capacity_mbps"] < 25, ts["capacity_mbps"] > 35
    assert slow.any() and fast.any()


def test_ecn_is_set_per_flow() -> None:
    sc = parse({"rate_mbps": 10, "duration_s": 5, "classic_ecn": True,
                "flows": [{"cc": "cubic", "ecn": False}, {"cc": "cubic"}]})
    r = run(sc, "dualpi2")
    assert [f["ecn"] for f in r["flows"]] == [False, True]
    # The classic queue holds both: Not-ECT packets are dropped, ECT(0) ones marked.
    assert r["drops"][0] > 0 and r["marks"][0] > 0


def test_short_flows_are_timed(tmp_path: Path) -> None:
    sc = parse({"rate_mbps": 20, "duration_s": 4, "flows": [{"cc": "cubic"}],
                "short_flows": [{"cc": "cubic", "per_s": 3, "size_kb": 100, "start_s": 1,
                                 "stop_s": 3}]})
    r = run(sc, "dualpi2")
    short = [f for f in r["flows"] if "bytes" in f]
    assert len(short) == len(sc.flows) - 1 > 0
    done = [f for f in short if f["fct_ms"] is not None]
    assert len(done) == len(short)
    assert all(f["received_bytes"] >= 100_000 and f["fct_ms"] > 20 for f in done)
    s = r["short_flows"]["cubic"]
    assert s["completed"] == len(done) and s["p50_ms"] <= s["p99_ms"]
    assert r["bulk_mbps"] == pytest.approx(r["flows"][0]["throughput_mbps"])


def test_time_series_counts_match_the_run(tmp_path: Path) -> None:
    seen: list[float] = []
    sc = parse({"rate_mbps": 10, "duration_s": 3, "flows": PAIR})
    r = run(sc, "dualpi2", tmp_path, plots=False, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 3 and len(seen) > 10
    ts = np.genfromtxt(tmp_path / "timeseries.csv", delimiter=",", names=True)
    for col in ("link_mbps", "capacity_mbps", "marks_c", "marks_l", "drops_c", "drops_l",
                "marks_model", "drops_model", "sojourn_p99_ms_c", "sojourn_p99_ms_l"):
        assert col in ts.dtype.names, col
    # Per-interval marks add up to the run's (the last interval may be cut by the stop).
    assert ts["marks_l"].sum() <= sum(r["marks"][1:]) + sum(r["marks_model"][1:])
    assert ts["marks_l"].sum() >= 0.9 * r["marks"][1]
    assert (ts["capacity_mbps"] == 10).all()
    r2 = run(sc, "fifo", tmp_path / "fifo", plots=False)
    ts2 = np.genfromtxt(tmp_path / "fifo" / "timeseries.csv", delimiter=",", names=True)
    assert {"marks", "drops", "sojourn_p99_ms"} <= set(ts2.dtype.names)
    assert r2["utilisation"] > 0.9


def test_the_step_threshold_reaches_the_core() -> None:
    # At 10 Mbit/s one 1500-byte packet takes 1.2 ms on the wire: a 1 ms step marks an L
    # queue of one packet; 3 ms (over 2 packets) almost never (sim/README.md).
    base = {"rate_mbps": 10, "duration_s": 5, "flows": PAIR}
    low = run(parse(base), "dualpi2")
    high = run(parse({**base, "dualpi2": {"step_threshold_us": 3000}}), "dualpi2")
    assert high["step_marks"] < low["step_marks"] / 5


def test_the_step_in_packets_and_min_qlen_step_reach_the_core() -> None:
    # At 10 Mbit/s the 1 ms step marks an L queue of one packet; a step of 2 packets marks
    # only a longer queue; min_qlen_step above any queue the run builds leaves no step mark.
    base = {"rate_mbps": 10, "duration_s": 5, "flows": PAIR}
    time_step = run(parse(base), "dualpi2")
    pkts = run(parse({**base, "dualpi2": {"step_thresh_pkts": 2}}), "dualpi2")
    floor = run(parse({**base, "dualpi2": {"min_qlen_step": 10000}}), "dualpi2")
    assert pkts["core_params"]["step_thresh_pkts"] == 2
    assert floor["core_params"]["min_qlen_step"] == 10000
    assert pkts["step_marks"] < time_step["step_marks"] / 2
    assert floor["step_marks"] == 0 < time_step["step_marks"]
