"""The harm budget: what model verdicts may signal beyond DualPI2 is bounded by what
DualPI2 itself signals (kmod/core/README.md, "Harm budget").

The rule, per queue: each packet leaving above DualPI2's 2-MTU floor adds DualPI2's own
signal probability for it (p_C for a classic packet; p_CL, or 1 past the step, for an L
packet) times harm_budget_pct / 100 to a credit of at most AQM_HARM_CREDIT_MAX signals;
a verdict that signals beyond the guard's decision spends one signal, and without one
(or below the floor) DualPI2's decision stands and verdicts_capped counts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
from test_core_verdicts import alone_and_answered

from aqm_bridge.channel import Region
from aqm_bridge.core import (
    DROP,
    ECN_ECT0,
    ECN_ECT1,
    ECN_NOT_ECT,
    MARK,
    PASS,
    QUEUE_C,
    SOURCE_FALLBACK,
    SOURCE_MODEL,
    Core,
)

ACT_ENQUEUE, ACT_DROP, ACT_MARK = 0, 1, 2
GUARD_NONE, GUARD_DUALPI2 = 0, 2
MS = 1_000_000
ONE = 1 << 32  # one signal of credit
CREDIT_MAX = 8 * ONE
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def region() -> Iterator[Region]:
    r = Region.create(f"aqm-test-harm-{os.getpid()}", state_entries=1024, verdict_entries=1024)
    try:
        yield r
    finally:
        r.close(unlink=True)


def drive_classic_queue(core: Core, n: int, ecns: list[int], p_min: float) -> int:
    """n classic packets at t=0, then PI updates until p' >= p_min; returns now."""
    for i in range(n):
        core.enqueue(0, 1500, ecns[i % len(ecns)])
    now = 0
    for k in range(1, 200):
        now = k * 16 * MS
        core.tick(now)
        if core.prob_base() >= p_min * ONE:
            return now
    raise AssertionError("p' never got there")


class TestRule:
    def test_credit_accrues_with_p_c_and_each_extra_signal_spends_one(
            self, region: Region) -> None:
        core = Core(seed=1, verdict_guard=GUARD_NONE, harm_budget_pct=200)
        core.attach(region)
        ecns = [ECN_ECT0] * 17 + [ECN_NOT_ECT] + [ECN_ECT0] * 2
        now = drive_classic_queue(core, 20, ecns, 0.5)
        actions = [ACT_ENQUEUE] * 4 + [ACT_MARK] * 8 + [ACT_ENQUEUE] * 5 + [ACT_DROP] \
            + [ACT_MARK] * 2
        assert region.write_verdicts(region.read_states(64)["seq"],
                                     np.array(actions, np.uint32)) == 20
        p = core.prob_base()
        inc = ((p * p) >> 32) * 200 // 100
        credit, expected, capped = 0, [], 0
        for i, (act, ecn) in enumerate(zip(actions, ecns, strict=True)):
            above_floor = (20 - i - 1) * 1500 >= 3000
            if above_floor:
                credit = min(credit + inc, CREDIT_MAX)
            if act == ACT_ENQUEUE:
                expected.append((PASS, SOURCE_MODEL))
            elif above_floor and credit >= ONE:
                credit -= ONE
                expected.append((DROP if ecn == ECN_NOT_ECT else MARK, SOURCE_MODEL))
            else:
                capped += 1
                expected.append((PASS, SOURCE_FALLBACK))
        got = []
        for _ in range(20):
            verdict, _, source = core.dequeue(now, QUEUE_C)
            got.append((verdict, source))
        assert got == expected
        assert core.stats()["verdicts_capped"] == [capped, 0]
        # Hand check of the pattern: about half a signal per packet at p' ~ 0.5.
        assert 0.4 * ONE < inc < 0.7 * ONE
        assert got[-2:] == [(PASS, SOURCE_FALLBACK)] * 2, "below the 2-MTU floor"
        assert got[17] == (DROP, SOURCE_MODEL), "a Not-ECT packet's drop, with credit"

    def test_a_drop_on_an_ecn_capable_packet_is_a_mark(self, region: Region) -> None:
        core = Core(seed=2, verdict_guard=GUARD_NONE, harm_budget_pct=1000)
        core.attach(region)
        now = drive_classic_queue(core, 12, [ECN_ECT0], 0.9)
        region.write_verdicts(region.read_states(64)["seq"], np.full(12, ACT_DROP, np.uint32))
        got = [core.dequeue(now, QUEUE_C)[0] for _ in range(4)]
        assert DROP not in got and MARK in got

    def test_no_credit_no_signal_at_p_zero(self, region: Region) -> None:
        core = Core(seed=3)
        core.attach(region)
        for _ in range(5):
            core.enqueue(0, 1500, ECN_ECT0)
            core.enqueue(0, 1500, ECN_ECT1)
        region.write_verdicts(region.read_states(64)["seq"], np.full(10, ACT_DROP, np.uint32))
        assert core.dequeue(10, QUEUE_C) == (PASS, 0, SOURCE_FALLBACK)
        assert core.stats()["verdicts_capped"] == [1, 0]

    @pytest.mark.parametrize("policy", ["drop", "mark", "random"])
    def test_with_a_zero_budget_any_model_is_exactly_dualpi2(
            self, region: Region, policy: str) -> None:
        """Every verdict meets the guard (drops too), so the random rolls stay DualPI2's."""
        def answer(seqs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            if policy == "random":
                return rng.integers(0, 3, len(seqs))
            return np.full(len(seqs), ACT_DROP if policy == "drop" else ACT_MARK)

        (alone, s_alone), (modelled, s_model) = alone_and_answered(
            region, answer, verdict_guard=GUARD_DUALPI2, harm_budget_pct=0)
        assert modelled == alone
        assert sum(s_model["verdicts_capped"]) > 10
        assert sum(s_alone["drops_fallback"]) + sum(s_alone["marks_fallback"]) > 100


# -- closed loop ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("harm") / "harm_sim"
    subprocess.run([cc, "-O2", "-std=gnu99", "-Wall", "-Wextra", "-Werror",
                    f"-I{REPO / 'kmod/core'}", f"-I{REPO / 'bridge'}",
                    str(REPO / "tests/test_core_harm_sim.c"), str(REPO / "kmod/core/aqm_core.c"),
                    "-lm", "-o", str(out)], check=True)
    return out


def run_sim(sim: Path, policy: str, budget: str, seed: int, cfg: str) -> dict:
    r = subprocess.run([str(sim), policy, budget, str(seed), *cfg.split()],
                       capture_output=True, text=True, timeout=120, check=True)
    return json.loads(r.stdout)


# 40 s; 20 Mbit/s with 4 classic (ECT(0) and Not-ECT) and 2 L flows, RTT 10-80 ms; and
# 50 Mbit/s with one classic and one L flow at 50 ms.
LOADS = ["40 20 4 2", "40 50 1 1 50"]
SEEDS = (1, 2, 3)


@pytest.mark.parametrize("cfg", LOADS)
@pytest.mark.parametrize("policy", ["drop", "mark", "random", "short-drop"])
def test_no_model_costs_more_than_ten_percent(sim: Path, cfg: str, policy: str) -> None:
    base = mean(run_sim(sim, "dualpi2", "200", s, cfg)["delivered"] for s in SEEDS)
    got = mean(run_sim(sim, policy, "200", s, cfg)["delivered"] for s in SEEDS)
    assert got >= 0.9 * base, f"{policy}: {got / base:.3f} of DualPI2's delivered packets"


def test_without_the_budget_those_models_collapse_the_link(sim: Path) -> None:
    base = run_sim(sim, "dualpi2", "200", 1, LOADS[0])["delivered"]
    for policy in ("drop", "mark", "random", "short-drop"):
        assert run_sim(sim, policy, "off", 1, LOADS[0])["delivered"] < 0.5 * base, policy


def test_a_model_like_the_shipped_one_is_rarely_capped(sim: Path) -> None:
    signals = capped = 0
    ratio = []
    for s in SEEDS:
        base = run_sim(sim, "dualpi2", "200", s, LOADS[0])["delivered"]
        r = run_sim(sim, "shipped", "200", s, LOADS[0])
        ratio.append(r["delivered"] / base)
        signals += r["model_signals"]
        capped += sum(r["capped"])
    assert signals > 1000
    assert capped / signals < 0.1
    assert mean(ratio) > 0.97
