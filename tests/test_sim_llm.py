"""The llm policy on ns-3: the real aqmllmd decides for simulated TCP, in closed loop."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from aqmllm_sim.runner import run
from aqmllm_sim.scenario import parse

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ns3") is None,
                                reason="the ns3 wheel (sim extra) is not installed")

FLOWS = [{"cc": "dctcp", "rtt_ms": 20}, {"cc": "cubic", "rtt_ms": 20}]
# The verdicts alone (no guard, no harm budget), so that every decision is the model's or
# a late one's.
SMALL = parse({"name": "small", "rate_mbps": 10, "duration_s": 5, "flows": FLOWS,
               "dualpi2": {"verdict_guard": "none", "harm_budget_pct": "off"}})


def test_simulated_time_waits_for_every_verdict() -> None:
    r = run(SMALL, "llm")
    assert r["verdict_timeouts"] == 0 and r["states_lost"] == 0
    assert r["decisions_fallback"] == 0
    assert r["decisions_model"] == r["verdicts_applied"] > 1000
    assert r["utilisation"] > 0.9


def test_an_inference_latency_longer_than_any_sojourn_leaves_dualpi2_alone() -> None:
    r = run(SMALL, "llm", inference_latency_us=1_000_000)
    assert r["decisions_model"] == 0
    assert r["verdicts_late"] == r["decisions_fallback"] > 1000


def test_a_realistic_latency_splits_the_decisions() -> None:
    r = run(SMALL, "llm", inference_latency_us=500)
    assert r["decisions_model"] > 0 and r["decisions_fallback"] > 0
    assert r["verdicts_late"] == r["decisions_fallback"]


@pytest.mark.parametrize("guard", ["step", "dualpi2"])
def test_the_guard_overrides_verdicts_with_dualpi2s_stricter_decisions(guard: str) -> None:
    # A 1 ms step at 10 Mbit/s is under seven packets of L queue: the step fires.
    r = run(dataclasses.replace(SMALL, verdict_guard=guard), "llm")
    assert r["verdict_timeouts"] == 0 and r["verdicts_late"] == 0
    # Every packet had its verdict in time; the guard made some DualPI2's.
    assert r["decisions_model"] + r["decisions_fallback"] == r["verdicts_applied"] > 1000
    assert r["decisions_fallback"] > 0
    if guard == "step":
        assert r["decisions_fallback"] == r["step_marks"]
    assert r["utilisation"] > 0.9
