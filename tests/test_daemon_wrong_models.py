"""Wrong models on the main job's load: build/aqm-host and aqmllmd as separate processes.

Each hostile model passes validation (a valid distribution everywhere) and would cut the
delivered rate to a fraction of DualPI2's; the watchdog takes it out of service and the
packaged default (which decides nothing beyond DualPI2) serves instead. Neither the
default nor the shipped student is ever taken out. Delivered
rates against DualPI2 alone: bench/wrong_models.py, figures in daemon/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from host_reports import every_packet_decided

from aqm_bridge.demo import HOST
from aqmllmd import hostile
from aqmllmd.default_model import DEFAULT_MODEL, STUDENT_MODEL
from aqmllmd.demo import run_with_daemon

pytestmark = pytest.mark.skipif(not HOST.is_file(), reason="build/aqm-host not built")

ARGS = ["--duration", "4", "--rate-mbps", "50", "--rtt-ms", "20", "--l4s", "2",
        "--classic-ecn", "1", "--classic", "1"]


@pytest.mark.parametrize("kind", ["always-drop", "always-mark", "uniform", "adversarial"])
def test_a_hostile_model_is_replaced_by_the_shipped_one(tmp_path: Path, kind: str) -> None:
    tmp_path.chmod(0o755)
    model = hostile.write(kind, tmp_path / f"{kind}.onnx")
    report, status = run_with_daemon(ARGS, model=str(model), log=tmp_path / "d.log")
    every_packet_decided(report)
    assert status is not None, (tmp_path / "d.log").read_text()
    wd = status["watchdog"]
    assert sum(wd["trips"].values()) == 1, wd
    assert wd["last_trip"]["model"] == f"hostile-{kind}"
    assert wd["quarantined"] == [f"hostile-{kind}"]
    assert status["model"]["path"] == str(DEFAULT_MODEL) and not status["paused"]
    assert "watchdog: model hostile-" in (tmp_path / "d.log").read_text()


@pytest.mark.parametrize("model", [None, STUDENT_MODEL], ids=["default", "student"])
def test_the_shipped_models_are_left_alone(tmp_path: Path, model: Path | None) -> None:
    report, status = run_with_daemon(ARGS, model=str(model) if model else None,
                                     log=tmp_path / "d.log")
    every_packet_decided(report)
    assert status is not None and report["model_share"] > 0.2
    assert sum(status["watchdog"]["trips"].values()) == 0, status["watchdog"]
    if model is None:  # the default decides nothing beyond DualPI2
        assert report["marks_model"] == [0, 0] and report["drops_model"] == [0, 0], report


def _ns3_delivered(scenario, policy: str, model: str | None = None) -> float:  # noqa: ANN001
    from aqmllm_sim.runner import run

    r = run(scenario, policy, model=model)
    return sum(f["throughput_mbps"] for f in r["flows"])


@pytest.mark.parametrize("kind", ["always-drop", "always-mark", "uniform", "adversarial"])
def test_a_hostile_model_costs_at_most_a_tenth_on_ns3(tmp_path: Path, kind: str) -> None:
    """l4s-50m-20ms (DCTCP and CUBIC with ECN), 2 s: the simulation waits for every
    verdict, so the figures are reproducible; the core's harm budget keeps the flows
    going (without it an always-drop model lets 4 packets through), the watchdog
    replaces the model."""
    ns3 = pytest.importorskip("ns3")
    del ns3
    import dataclasses

    from aqm_bridge._ffi import REPO_ROOT
    from aqmllm_sim.scenario import load

    scenario = dataclasses.replace(
        load(REPO_ROOT / "sim" / "scenarios" / "l4s-50m-20ms.toml"), duration_s=2.0)
    tmp_path.chmod(0o755)
    model = hostile.write(kind, tmp_path / f"{kind}.onnx")
    alone = _ns3_delivered(scenario, "dualpi2")
    assert _ns3_delivered(scenario, "llm", str(model)) >= 0.9 * alone


def test_the_default_decides_exactly_as_dualpi2_on_ns3() -> None:
    """The packaged default answers enqueue for every packet: under the dualpi2 guard the
    closed loop through the real aqmllmd is the DualPI2-alone run, flow for flow and
    sojourn for sojourn (ns-3 waits for each verdict, so both runs are deterministic);
    only who is counted as deciding differs."""
    ns3 = pytest.importorskip("ns3")
    del ns3
    import dataclasses

    from aqm_bridge._ffi import REPO_ROOT
    from aqmllm_sim.runner import run
    from aqmllm_sim.scenario import load

    scenario = dataclasses.replace(
        load(REPO_ROOT / "sim" / "scenarios" / "l4s-50m-20ms.toml"), duration_s=2.0)
    alone = run(scenario, "dualpi2")
    looped = run(scenario, "llm", model=str(DEFAULT_MODEL))
    bookkeeping = {"policy", "model", "inference_latency_us", "decisions_model",
                   "decisions_fallback", "states_published", "verdict_timeouts",
                   "verdicts_applied"}
    assert looped["decisions_model"] > 1000
    differ = {k for k in set(alone) | set(looped)
              if k not in bookkeeping and alone.get(k) != looped.get(k)}
    assert not differ, {k: (alone.get(k), looped.get(k)) for k in differ}
