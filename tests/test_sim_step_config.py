"""The core's step settings as scenario keys: parsed, validated, passed to the runner."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aqmllm_sim.scenario import (
    HARM_BUDGET_DEFAULT,
    HARM_BUDGET_MAX,
    LIMIT_PKTS_MAX,
    ScenarioError,
    parse,
)

REPO = Path(__file__).resolve().parents[1]
PAIR = [{"cc": "dctcp", "rtt_ms": 20}, {"cc": "cubic", "rtt_ms": 20}]


def test_step_keys_default_to_linux_and_reach_the_flat_form() -> None:
    sc = parse({"flows": PAIR})
    assert (sc.step_thresh_pkts, sc.min_qlen_step, sc.harm_budget_pct) == (0, 0, 200)
    sc = parse({"flows": PAIR, "dualpi2": {"step_thresh_pkts": 2, "min_qlen_step": 1,
                                           "harm_budget_pct": 50}})
    flat = sc.flat("llm", "chan").splitlines()
    assert {"step_thresh_pkts 2", "min_qlen_step 1", "harm_budget_pct 50"} <= set(flat)
    assert "step_thresh_pkts 2" in sc.flat("dualpi2").splitlines()
    assert "step_thresh_pkts" not in sc.flat("fq_codel")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("step_thresh_pkts", -1, "dualpi2.step_thresh_pkts: -1 is outside"),
    ("step_thresh_pkts", 1.5, "dualpi2.step_thresh_pkts: want an integer"),
    ("min_qlen_step", LIMIT_PKTS_MAX + 1, "dualpi2.min_qlen_step: 16384 is outside"),
    ("harm_budget_pct", HARM_BUDGET_MAX + 1, "dualpi2.harm_budget_pct: 1001 is outside"),
    ("step_packets", 2, "unknown field(s) step_packets"),
])
def test_bad_step_keys_are_refused_with_their_field(key: str, value: object,
                                                    message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        parse({"flows": PAIR, "dualpi2": {key: value}})


def test_bounds_are_the_cores() -> None:
    header = (REPO / "kmod" / "core" / "aqm_core.h").read_text()
    vslots = int(re.search(r"#define\s+AQM_VSLOTS\s+(\d+)", header).group(1))
    assert LIMIT_PKTS_MAX == vslots - 1
    assert HARM_BUDGET_DEFAULT == int(re.search(
        r"#define\s+AQM_HARM_BUDGET_DEFAULT\s+(\d+)u?", header).group(1))
    assert HARM_BUDGET_MAX == int(re.search(
        r"#define\s+AQM_HARM_BUDGET_MAX\s+(\d+)u?", header).group(1))
