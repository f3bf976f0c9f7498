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
