"""DualPI2 in the ns-3 host against real TCP (DCTCP and CUBIC), and scenario checks.

Tolerances come from recorded runs (sim/README.md, "Recorded runs"): at 50 Mbit/s and
20 ms, 20 s, seeds 1-4, DualPI2 gave L p99 0.67 ms in every run (the step threshold is
1 ms), classic p50 14.6-15.3 ms (the PI target is 15 ms) and p99 19.7-20.9 ms, link
utilisation 0.996, DCTCP/CUBIC throughput 0.95-1.27, Jain 0.986-0.999. FIFO (1000
packets) on the 10 s variant: a standing queue of 195 ms p50 (DualPI2: 14.9 ms).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aqmllm_sim.runner import RUNNER, run
from aqmllm_sim.scenario import ScenarioError, load, parse, trace_rate

SCENARIOS = Path(__file__).resolve().parents[1] / "sim" / "scenarios"
HAVE_NS3 = importlib.util.find_spec("ns3") is not None
needs_ns3 = pytest.mark.skipif(not HAVE_NS3, reason="the ns3 wheel (sim extra) is not installed")


@needs_ns3
def test_the_runner_is_built_when_ns3_is_installed() -> None:
    assert RUNNER.is_file(), "make builds build/aqm-sim when the ns3 wheel is installed"


@needs_ns3
def test_dualpi2_keeps_l4s_near_the_step_and_classic_near_target() -> None:
    r = run(load(SCENARIOS / "l4s-50m-20ms.toml"), "dualpi2")
    assert r["sojourn_ms_l"]["p99"] < 1.0  # the 1 ms step threshold
    assert 12 < r["sojourn_ms_c"]["p50"] < 18  # the 15 ms PI target
    assert r["sojourn_ms_c"]["p99"] < 30
    assert r["utilisation"] >= 0.95
    assert r["marks"][1] > 0 and r["drops_limit"] == [0, 0]
    # The coupling shares the link between the scalable and the classic flow.
    assert 0.7 < r["scalable_classic_ratio"] < 1.5 and r["jain"] > 0.95
    assert r["aggregate_mbps"] == pytest.approx(sum(f["throughput_mbps"] for f in r["flows"]))
    dctcp, cubic = (f["throughput_mbps"] for f in r["flows"])
    assert r["scalable_classic_ratio"] == pytest.approx(dctcp / cubic)


@needs_ns3
def test_fifo_on_the_same_scenario_shows_the_standing_queue() -> None:
    sc = parse({"rate_mbps": 50, "duration_s": 10,
                "flows": [{"cc": "dctcp", "rtt_ms": 20}, {"cc": "cubic", "rtt_ms": 20}]})
    fifo, dualpi2 = run(sc, "fifo"), run(sc, "dualpi2")
    assert fifo["sojourn_ms"]["p50"] > 100  # 195 ms recorded; the buffer holds 240 ms
    assert fifo["sojourn_ms"]["p50"] > 5 * dualpi2["sojourn_ms_c"]["p50"]
    assert fifo["queue_disc"]["marked"] == 0 and fifo["queue_disc"]["dropped"] > 0
    assert fifo["utilisation"] >= 0.95
    # DCTCP halves on loss as Linux does (ns-3's own TcpDctcp barely slows: 3.6 here).
    assert fifo["scalable_classic_ratio"] < 2.5


@pytest.mark.parametrize(("data", "message"), [
    ({"flows": [{"cc": "dctcp"}], "colour": 1}, "unknown field.*colour"),
    ({"flows": [{"cc": "bbr3"}]}, r"flows\[0\].cc"),
    ({"flows": [{"cc": "cubic", "rtt_ms": 0}]}, r"flows\[0\].rtt_ms.*outside"),
    ({"flows": [{"cc": "cubic", "start_s": 5, "stop_s": 2}]}, r"flows\[0\].stop_s"),
    ({"flows": []}, "flows: want at least one"),
    ({"rate_mbps": -5, "flows": [{"cc": "reno"}]}, "rate_mbps.*outside"),
    ({"rate_mbps": "fast", "flows": [{"cc": "reno"}]}, "rate_mbps: want a number"),
    ({"classic_ecn": "yes", "flows": [{"cc": "reno"}]}, "classic_ecn"),
    ({"flows": [{"cc": "reno", "count": 100}, {"cc": "reno", "count": 64},
                {"cc": "reno", "count": 64}, {"cc": "reno", "count": 64}]}, r"count.*outside"),
])
def test_bad_scenarios_are_refused_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse(data)


def test_bad_files_and_policies(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("rate_mbps = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "missing.toml")
    with pytest.raises(ScenarioError, match="policy"):
        load(SCENARIOS / "l4s-50m-20ms.toml").flat("wred")


def test_shipped_scenarios_load() -> None:
    for path in SCENARIOS.glob("*.toml"):
        assert load(path).flows


class TestScenarioFeatures:
    def test_steps_loss_and_udp_reach_the_runner(self) -> None:
        sc = parse({"duration_s": 20, "loss": 0.001,
                    "rate_steps": [{"at_s": 10, "rate_mbps": 25}],
                    "udp": [{"rate_mbps": 5, "on_s": 0.5, "off_s": 0.5}],
                    "flows": [{"cc": "cubic"}]})
        flat = sc.flat("dualpi2")
        assert "rate_at 10.0 25.0" in flat and "loss 0.001" in flat
        assert "udp 5.0 0.5 0.5 0.0 20.0" in flat

    def test_a_mahimahi_trace_reaches_the_runner_as_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "t.mahimahi").write_text("".join(f"{ms}\n" for ms in range(1, 100)))
        sc = parse({"duration_s": 0.2, "trace": "t.mahimahi", "flows": [{"cc": "cubic"}]},
                   base=tmp_path)
        assert f"trace {(tmp_path / 't.mahimahi').resolve()}" in sc.flat("fifo")
        assert trace_rate(tmp_path / "t.mahimahi", 10)[1][3] == pytest.approx(12.0)

    def test_per_flow_ecn_sizes_and_short_flow_arrivals(self) -> None:
        sc = parse({"duration_s": 10, "seed": 3, "classic_ecn": True,
                    "flows": [{"cc": "cubic", "ecn": False}, {"cc": "reno", "size_kb": 50}],
                    "short_flows": [{"cc": "dctcp", "per_s": 4, "size_kb": 20, "start_s": 2}]})
        assert sc.flows[0].ecn is False and sc.flows[0].bytes == 0
        assert sc.flows[1].bytes == 50_000 and sc.flows[1].ecn is None
        short = sc.flows[2:]
        assert 15 < len(short) < 70 and all(f.bytes == 20_000 for f in short)
        assert all(2 <= f.start_s < 10 for f in short)
        assert sorted(f.start_s for f in short) == [f.start_s for f in short]
        flat = sc.flat("dualpi2")
        assert "step_threshold_us 1000" in flat and "target_us 15000" in flat
        assert "step_threshold_us" not in sc.flat("pie")
        assert "verdict_guard 2" in sc.flat("llm") and "verdict_guard" not in flat
        assert "flow cubic 20.0 0.0 10.0 0 0" in flat and "flow reno 20.0 0.0 10.0 50000 -1" in flat
        # Arrivals are drawn from the scenario's seed: the same file, the same flows.
        again = parse({"duration_s": 10, "seed": 3, "flows": [{"cc": "cubic"}],
                       "short_flows": [{"cc": "dctcp", "per_s": 4, "size_kb": 20,
                                        "start_s": 2}]})
        assert [f.start_s for f in again.flows[1:]] == [f.start_s for f in short]

    @pytest.mark.parametrize(("data", "message"), [
        ({"trace": "missing.mahimahi"}, "trace: cannot read trace"),
        ({"trace": "bad.mahimahi"}, "not a Mahimahi trace"),
        ({"rate_steps": [{"at_s": 99, "rate_mbps": 5}]}, r"rate_steps\[0\].at_s.*outside"),
        ({"udp": [{"rate_mbps": 1, "start_s": 5, "stop_s": 1}]}, r"udp\[0\].stop_s"),
        ({"loss": 0.9}, "loss.*outside"),
        ({"trace": "bad.mahimahi", "rate_steps": [{"at_s": 1, "rate_mbps": 5}]}, "choose one"),
        ({"trace": "zero.mahimahi"}, "no duration"),
        ({"trace": "unordered.mahimahi"}, "not in time order"),
        ({"trace_bin_ms": 100}, "unknown field.*trace_bin_ms"),
        ({"udp": [{"rate_mbps": 1, "pattern": "pareto"}]}, r"udp\[0\].pattern"),
        ({"flows": [{"cc": "cubic", "ecn": 1}]}, r"flows\[0\].ecn: want true or false"),
        ({"flows": [{"cc": "cubic", "size_kb": 0}]}, r"flows\[0\].size_kb.*outside"),
        ({"short_flows": [{"cc": "cubic", "size_kb": 10}]}, r"short_flows\[0\].per_s"),
        ({"short_flows": [{"cc": "quic", "per_s": 1, "size_kb": 10}]}, r"short_flows\[0\].cc"),
        ({"short_flows": [{"cc": "reno", "per_s": 500, "size_kb": 10}]}, "at most 1000"),
        ({"dualpi2": {"step_us": 2000}}, "dualpi2: unknown field.*step_us"),
        ({"dualpi2": {"target_us": 0}}, r"dualpi2.target_us.*outside"),
        ({"dualpi2": 5}, r"dualpi2: want a \[dualpi2\] table"),
        ({"dualpi2": {"verdict_guard": "all"}}, r"dualpi2.verdict_guard.*none, step, dualpi2"),
    ])
    def test_bad_capacity_and_background_fields(self, tmp_path: Path, data: dict,
                                                 message: str) -> None:
        (tmp_path / "bad.mahimahi").write_text("12\nabc\n")
        (tmp_path / "zero.mahimahi").write_text("0\n0\n")
        (tmp_path / "unordered.mahimahi").write_text("5\n3\n")
        with pytest.raises(ScenarioError, match=message):
            parse({"duration_s": 10, "flows": [{"cc": "reno"}], **data}, base=tmp_path)


@needs_ns3
def test_rate_steps_utilisation_is_measured_against_the_capacity_offered() -> None:
    r = run(parse({"rate_mbps": 20, "duration_s": 6,
                   "rate_steps": [{"at_s": 3, "rate_mbps": 5}],
                   "flows": [{"cc": "cubic", "rtt_ms": 20}]}), "dualpi2")
    assert 0.8 < r["utilisation"] <= 1.0
