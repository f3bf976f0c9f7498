"""DualPI2 in the ns-3 host against real TCP (DCTCP and CUBIC), and scenario checks.

Tolerances come from recorded runs (sim/README.md): at 50 Mbit/s and 20 ms, 20 s,
seed 1, DualPI2 gave L p99 0.67 ms, classic p50 13.4 ms / p99 20.9 ms, utilisation
0.961; FIFO (1000 packets) a standing queue of 161 ms p50.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aqmllm_sim.runner import RUNNER, run
from aqmllm_sim.scenario import ScenarioError, load, parse

SCENARIOS = Path(__file__).resolve().parents[1] / "sim" / "scenarios"
HAVE_NS3 = importlib.util.find_spec("ns3") is not None
needs_ns3 = pytest.mark.skipif(not HAVE_NS3, reason="the ns3 wheel (sim extra) is not installed")


@needs_ns3
def test_the_runner_is_built_when_ns3_is_installed() -> None:
    assert RUNNER.is_file(), "make builds build/aqm-sim when the ns3 wheel is installed"


@needs_ns3
def test_dualpi2_keeps_l4s_near_the_step_and_classic_near_target() -> None:
    r = run(load(SCENARIOS / "l4s-50m-20ms.toml"), "dualpi2")
    assert r["sojourn_ms_l"]["p99"] < 1.5  # the 1 ms step threshold
    assert 5 < r["sojourn_ms_c"]["p50"] < 25  # the 15 ms PI target
    assert r["utilisation"] >= 0.95
    assert r["marks"][1] > 0 and r["drops_limit"] == [0, 0]
    assert all(f["throughput_mbps"] > 1 for f in r["flows"])
    assert r["aggregate_mbps"] == pytest.approx(sum(f["throughput_mbps"] for f in r["flows"]))
    dctcp, cubic = (f["throughput_mbps"] for f in r["flows"])
    assert r["scalable_classic_ratio"] == pytest.approx(dctcp / cubic)


@needs_ns3
def test_fifo_on_the_same_scenario_shows_the_standing_queue() -> None:
    sc = parse({"rate_mbps": 50, "duration_s": 10,
                "flows": [{"cc": "dctcp", "rtt_ms": 20}, {"cc": "cubic", "rtt_ms": 20}]})
    r = run(sc, "fifo")
    assert r["sojourn_ms"]["p50"] > 50
    assert r["queue_disc"]["marked"] == 0


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

    def test_a_mahimahi_trace_becomes_capacity_steps(self, tmp_path: Path) -> None:
        # 12 opportunities per ms for 100 ms = 144 Mbit/s, then 1 per ms = 12 Mbit/s.
        lines = [str(ms) for ms in range(100) for _ in range(12)] + \
                [str(ms) for ms in range(100, 200)]
        (tmp_path / "t.mahimahi").write_text("\n".join(lines) + "\n")
        sc = parse({"duration_s": 0.2, "trace": "t.mahimahi", "trace_bin_ms": 100,
                    "flows": [{"cc": "cubic"}]}, base=tmp_path)
        assert sc.rate_steps == ((0.0, pytest.approx(144.0)), (0.1, pytest.approx(12.0)))

    @pytest.mark.parametrize(("data", "message"), [
        ({"trace": "missing.mahimahi"}, "trace: cannot read trace"),
        ({"trace": "bad.mahimahi"}, "not a Mahimahi trace"),
        ({"rate_steps": [{"at_s": 99, "rate_mbps": 5}]}, r"rate_steps\[0\].at_s.*outside"),
        ({"udp": [{"rate_mbps": 1, "start_s": 5, "stop_s": 1}]}, r"udp\[0\].stop_s"),
        ({"loss": 0.9}, "loss.*outside"),
        ({"trace": "bad.mahimahi", "rate_steps": [{"at_s": 1, "rate_mbps": 5}]}, "choose one"),
    ])
    def test_bad_capacity_and_background_fields(self, tmp_path: Path, data: dict,
                                                 message: str) -> None:
        (tmp_path / "bad.mahimahi").write_text("12\nabc\n")
        with pytest.raises(ScenarioError, match=message):
            parse({"duration_s": 10, "flows": [{"cc": "reno"}], **data}, base=tmp_path)


@needs_ns3
def test_rate_steps_utilisation_is_measured_against_the_capacity_offered() -> None:
    r = run(parse({"rate_mbps": 20, "duration_s": 6,
                   "rate_steps": [{"at_s": 3, "rate_mbps": 5}],
                   "flows": [{"cc": "cubic", "rtt_ms": 20}]}), "dualpi2")
    assert 0.8 < r["utilisation"] <= 1.0
