"""The model hook of the core: state export, verdict precedence, lateness, bad verdicts.

These tests look at the mechanics of verdicts with the harm budget off
(harm_budget_pct = HARM_BUDGET_OFF); tests/test_core_harm.py covers the budget."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from aqm_bridge.channel import Region
from aqm_bridge.core import (
    DROP,
    ECN_CE,
    ECN_ECT0,
    ECN_ECT1,
    ECN_NOT_ECT,
    MARK,
    PASS,
    PROB_ONE,
    QUEUE_C,
    QUEUE_L,
    SOURCE_FALLBACK,
    SOURCE_MODEL,
    Core,
)
from aqm_bridge.core import HARM_BUDGET_OFF as OFF

ACT_ENQUEUE, ACT_DROP, ACT_MARK = 0, 1, 2
GUARD_NONE, GUARD_STEP, GUARD_DUALPI2 = 0, 1, 2
MS = 1_000_000


@pytest.fixture
def region() -> Iterator[Region]:
    r = Region.create(f"aqm-test-verdicts-{os.getpid()}", state_entries=256, verdict_entries=256)
    try:
        yield r
    finally:
        r.close(unlink=True)


@pytest.fixture
def core(region: Region) -> Core:
    c = Core(seed=1, harm_budget_pct=OFF)
    c.attach(region)
    return c


def send(region: Region, seq: int, action: int) -> None:
    assert region.write_verdicts(np.array([seq], np.uint64), np.array([action], np.uint32)) == 1


Answer = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Run = tuple[list[tuple[int, int]], dict[str, Any]]


def alone_and_answered(region: Region, answer: Answer, **params: int) -> tuple[Run, Run]:
    """One overloaded trace (3000 packets of random length and ECN codepoint, one every
    0.4 ms, a dequeue every second one: the queues build, p' climbs, steps fire) through
    Core(seed=9, limit_pkts=200, **params), first alone, then attached with each state
    answered at once with answer(seqs, rng). Each run's (verdict, seq) per dequeue and
    its counters."""
    rng = np.random.default_rng(5)
    lens, ecns = rng.integers(64, 1500, 3000), rng.integers(0, 4, 3000)
    runs = []
    for attach in (False, True):
        core = Core(seed=9, limit_pkts=200, **params)
        if attach:
            core.attach(region)
        decided = []
        for i, (length, ecn) in enumerate(zip(lens.tolist(), ecns.tolist(), strict=True)):
            now = i * 400_000
            core.enqueue(now, length, ecn)
            if attach:
                seqs = region.read_states(8)["seq"]
                region.write_verdicts(seqs, answer(seqs, rng).astype(np.uint32))
            if i % 2 and (q := core.select(now)) is not None:
                verdict, seq, _ = core.dequeue(now, q)
                decided.append((verdict, seq))
        runs.append((decided, core.stats()))
    return runs[0], runs[1]


class TestStateExport:
    def test_each_enqueued_packet_publishes_one_record(self, core: Core, region: Region) -> None:
        core.enqueue(1 * MS, 1500, ECN_NOT_ECT)
        core.enqueue(2 * MS, 900, ECN_ECT1)
        core.enqueue(3 * MS, 64, ECN_CE)
        states = region.read_states(16)
        assert list(states["seq"]) == [0, 1, 2]
        assert list(states["queue"]) == [QUEUE_C, QUEUE_L, QUEUE_L]
        assert list(states["ecn"]) == [ECN_NOT_ECT, ECN_ECT1, ECN_CE]
        assert list(states["len"]) == [1500, 900, 64]
        assert list(states["ts_ns"]) == [1 * MS, 2 * MS, 3 * MS]
        last = states[-1]
        assert list(last["backlog_pkts"]) == [1, 2]
        assert list(last["backlog_bytes"]) == [1500, 964]
        # Head sojourns when the last packet arrived: C head since 1 ms, L head since 2 ms.
        assert list(last["sojourn_ns"]) == [2 * MS, 1 * MS]
        assert all(states["deadline_ns"] >= states["ts_ns"])
        assert core.stats()["states_published"] == 3

    def test_probabilities_are_published(self, core: Core, region: Region) -> None:
        core.enqueue(0, 1500, ECN_NOT_ECT)
        for k in range(1, 30):
            core.tick(k * 16 * MS)
        core.enqueue(30 * 16 * MS, 100, ECN_ECT1)
        rec = region.read_states(16)[-1]
        p = core.prob_base()
        assert rec["prob_base"] == p
        assert rec["prob_c"] == (p * p) >> 32
        assert rec["prob_cl"] == min(2 * p, PROB_ONE)

    def test_deadline_reflects_the_backlog_at_the_measured_rate(
            self, core: Core, region: Region) -> None:
        # A 12 Mbit/s link: one 1500-byte packet per millisecond while backlogged.
        now = 0
        for _ in range(50):
            core.enqueue(now, 1500, ECN_ECT0)
        for _ in range(40):
            now += MS
            core.dequeue(now, QUEUE_C)
        region.read_states(256)
        core.enqueue(now, 1500, ECN_ECT0)  # 10 packets (15 000 bytes) ahead of it
        rec = region.read_states(1)[0]
        wait_ms = (int(rec["deadline_ns"]) - now) / MS
        assert rec["rate_bps"] == pytest.approx(1_500_000, rel=0.02)
        assert wait_ms == pytest.approx(10.0, rel=0.05)

    def test_full_state_ring_loses_records_never_packets(self, core: Core, region: Region) -> None:
        for i in range(300):
            assert core.enqueue(i, 100, ECN_ECT1)[0] == PASS
        stats = core.stats()
        assert stats["states_published"] == 256 and stats["states_lost"] == 44
        for i in range(300):
            assert core.dequeue(1000 + i, QUEUE_L)[2] == SOURCE_FALLBACK
        assert core.stats()["decisions_fallback"] == 300


class TestVerdicts:
    @pytest.mark.parametrize(("ecn", "action", "expected"), [
        (ECN_ECT0, ACT_MARK, MARK), (ECN_ECT1, ACT_MARK, MARK), (ECN_CE, ACT_MARK, MARK),
        (ECN_NOT_ECT, ACT_MARK, DROP),  # RFC 3168: a mark for Not-ECT is a drop
        (ECN_ECT0, ACT_DROP, DROP), (ECN_ECT1, ACT_ENQUEUE, PASS)])
    def test_a_verdict_in_time_decides(
            self, core: Core, region: Region, ecn: int, action: int, expected: int) -> None:
        _, queue, seq = core.enqueue(0, 1500, ecn)
        send(region, seq, action)
        verdict, got_seq, source = core.dequeue(10, queue)
        assert (verdict, got_seq, source) == (expected, seq, SOURCE_MODEL)
        stats = core.stats()
        assert stats["verdicts_applied"] == 1 and stats["decisions_model"] == 1
        if expected == DROP:
            assert stats["drops_model"][queue] == 1
        if expected == MARK:
            assert stats["marks_model"][queue] == 1

    def test_without_a_guard_model_enqueue_overrides_dualpi2(self, region: Region) -> None:
        core = Core(seed=1, harm_budget_pct=OFF, verdict_guard=GUARD_NONE)
        core.attach(region)
        core.enqueue(0, 1500, ECN_ECT1)
        # 5 ms in the L queue: DualPI2's step would mark it.
        core.enqueue(1, 1500, ECN_ECT1)
        send(region, 1, ACT_ENQUEUE)
        assert core.dequeue(5 * MS, QUEUE_L) == (MARK, 0, SOURCE_FALLBACK)
        assert core.dequeue(5 * MS, QUEUE_L) == (PASS, 1, SOURCE_MODEL)


class TestVerdictGuard:
    """What DualPI2 still decides, at dequeue, over a verdict fixed at enqueue."""

    @pytest.fixture
    def step_core(self, region: Region) -> Core:
        c = Core(seed=1, harm_budget_pct=OFF, verdict_guard=GUARD_STEP)
        c.attach(region)
        return c

    def test_the_default_guard_is_dualpi2s_whole_decision(self) -> None:
        assert Core(seed=1).params()["verdict_guard"] == GUARD_DUALPI2

    def test_the_step_guard_marks_l_packets_past_the_step(
            self, step_core: Core, region: Region) -> None:
        core = step_core
        core.enqueue(0, 1500, ECN_ECT1)
        core.enqueue(0, 1500, ECN_ECT1)
        core.enqueue(0, 1500, ECN_ECT0)
        for seq in (0, 1, 2):
            send(region, seq, ACT_ENQUEUE)
        assert core.dequeue(MS // 2, QUEUE_L) == (PASS, 0, SOURCE_MODEL)
        assert core.dequeue(5 * MS, QUEUE_L) == (MARK, 1, SOURCE_FALLBACK)
        # The step is the L queue's: a classic packet's verdict stands.
        assert core.dequeue(5 * MS, QUEUE_C) == (PASS, 2, SOURCE_MODEL)
        stats = core.stats()
        assert stats["step_marks"] == 1 and stats["marks_fallback"] == [0, 1]
        assert stats["verdicts_applied"] == 3 and stats["decisions_model"] == 2

    def test_the_step_guard_leaves_model_drops_and_marks(
            self, step_core: Core, region: Region) -> None:
        core = step_core
        core.enqueue(0, 1500, ECN_ECT1)
        core.enqueue(0, 1500, ECN_ECT1)
        send(region, 0, ACT_DROP)
        send(region, 1, ACT_MARK)
        assert core.dequeue(5 * MS, QUEUE_L) == (DROP, 0, SOURCE_MODEL)
        assert core.dequeue(5 * MS, QUEUE_L) == (MARK, 1, SOURCE_MODEL)
        assert core.stats()["step_marks"] == 0, "the verdict's mark is not the step's"

    def test_a_dualpi2_guard_takes_the_stronger_decision(self, region: Region) -> None:
        core = Core(seed=1, harm_budget_pct=OFF, verdict_guard=GUARD_DUALPI2,
                    step_thresh_ns=1_000_000_000)
        core.attach(region)
        # A standing classic queue drives p' to 1: overload, DualPI2 drops classic packets.
        core.enqueue(0, 1500, ECN_NOT_ECT)
        for k in range(1, 200):
            core.tick(k * 16 * MS)
        assert core.prob_base() == PROB_ONE
        now = 200 * 16 * MS
        for _ in range(5):  # above DualPI2's 2-MTU floor while the three leave
            core.enqueue(now, 1500, ECN_ECT0)
        for seq, action in ((1, ACT_ENQUEUE), (2, ACT_MARK), (3, ACT_DROP)):
            send(region, seq, action)
        assert core.dequeue(now, QUEUE_C)[2] == SOURCE_FALLBACK  # the first, no verdict
        assert core.dequeue(now, QUEUE_C) == (DROP, 1, SOURCE_FALLBACK)
        assert core.dequeue(now, QUEUE_C) == (DROP, 2, SOURCE_FALLBACK)
        assert core.dequeue(now, QUEUE_C) == (DROP, 3, SOURCE_MODEL)

    def test_under_the_dualpi2_guard_a_model_that_always_enqueues_is_dualpi2(
            self, region: Region) -> None:
        (alone, s_alone), (guarded, s_guarded) = alone_and_answered(
            region, lambda seqs, _: np.zeros(len(seqs), np.uint32),
            harm_budget_pct=OFF, verdict_guard=GUARD_DUALPI2)
        assert guarded == alone
        assert s_guarded["decisions_model"] > 0 and s_guarded["step_marks"] > 0
        assert sum(s_alone["marks_fallback"]) + sum(s_alone["drops_fallback"]) > 100
        assert s_guarded["step_marks"] == s_alone["step_marks"]

    def test_a_dualpi2_guard_lets_the_model_be_stricter(self, region: Region) -> None:
        core = Core(seed=1, harm_budget_pct=OFF, verdict_guard=GUARD_DUALPI2)
        core.attach(region)
        core.enqueue(0, 1500, ECN_ECT0)
        send(region, 0, ACT_MARK)
        # p' = 0 and no step in C: DualPI2 would pass it; the model's mark stands.
        assert core.dequeue(10, QUEUE_C) == (MARK, 0, SOURCE_MODEL)

    def test_no_verdict_means_dualpi2(self, core: Core, region: Region) -> None:
        core.enqueue(0, 1500, ECN_ECT0)
        assert core.dequeue(10, QUEUE_C) == (PASS, 0, SOURCE_FALLBACK)
        assert core.stats()["decisions_fallback"] == 1

    def test_a_verdict_after_departure_is_late_and_ignored(
            self, core: Core, region: Region) -> None:
        core.enqueue(0, 1500, ECN_ECT0)
        core.dequeue(10, QUEUE_C)
        send(region, 0, ACT_DROP)
        core.tick(20)
        stats = core.stats()
        assert stats["verdicts_late"] == 1 and stats["verdicts_applied"] == 0

    @pytest.mark.parametrize(("seq", "action"), [(12345, ACT_DROP), (0, 3), (0, 0xFFFFFFFF)])
    def test_unknown_seq_or_action_is_bad_and_ignored(
            self, core: Core, region: Region, seq: int, action: int) -> None:
        core.enqueue(0, 1500, ECN_ECT0)
        send(region, seq, action)
        assert core.dequeue(10, QUEUE_C) == (PASS, 0, SOURCE_FALLBACK)
        assert core.stats()["verdicts_bad"] == 1

    def test_a_second_verdict_is_bad_and_the_first_stands(
            self, core: Core, region: Region) -> None:
        core.enqueue(0, 1500, ECN_ECT0)
        send(region, 0, ACT_MARK)
        send(region, 0, ACT_DROP)
        assert core.dequeue(10, QUEUE_C) == (MARK, 0, SOURCE_MODEL)
        assert core.stats()["verdicts_bad"] == 1

    def test_paused_channel_means_fallback_only(self, core: Core, region: Region) -> None:
        core.enqueue(0, 1500, ECN_ECT0)
        send(region, 0, ACT_DROP)
        region.paused = True
        assert core.dequeue(10, QUEUE_C) == (PASS, 0, SOURCE_FALLBACK)
        region.paused = False
        core.enqueue(20, 1500, ECN_ECT0)
        send(region, 1, ACT_DROP)
        assert core.dequeue(30, QUEUE_C) == (DROP, 1, SOURCE_MODEL)

    def test_limit_drop_holds_whatever_a_model_says(self, region: Region) -> None:
        core = Core(limit_pkts=2)
        core.attach(region)
        core.enqueue(0, 100, ECN_ECT1)
        core.enqueue(0, 100, ECN_ECT1)
        assert core.enqueue(0, 100, ECN_ECT1) == (DROP, QUEUE_L, None)
        assert core.stats()["states_published"] == 2

    def test_every_packet_gets_exactly_one_decision(self, core: Core, region: Region) -> None:
        rng = np.random.default_rng(3)
        now, decided = 0, 0
        for _ in range(2000):
            now += 1000
            core.enqueue(now, int(rng.integers(64, 1500)), int(rng.integers(0, 4)))
            states = region.read_states(8)
            keep = rng.random(len(states)) < 0.5
            region.write_verdicts(states["seq"][keep],
                                  rng.integers(0, 3, keep.sum()).astype(np.uint32))
            q = core.select(now)
            if q is not None and rng.random() < 0.9:
                core.dequeue(now, q)
                decided += 1
        while (q := core.select(now)) is not None:
            core.dequeue(now, q)
            decided += 1
        stats = core.stats()
        assert stats["decisions_model"] + stats["decisions_fallback"] == decided == 2000
        # The step guard overrides some verdicts; they count as DualPI2's decisions.
        assert 0 < stats["decisions_model"] <= stats["verdicts_applied"]


class TestSimulationHooks:
    def test_collect_and_ready(self, core: Core, region: Region) -> None:
        _, _, seq = core.enqueue(0, 1500, ECN_ECT0)
        assert not core.verdict_ready(seq)
        send(region, seq, ACT_DROP)
        assert core.collect_verdicts() == 1 and core.verdict_ready(seq)
        assert core.dequeue(10, QUEUE_C) == (DROP, seq, SOURCE_MODEL)

    def test_emulated_inference_latency_withholds_early_verdicts(
            self, core: Core, region: Region) -> None:
        core.set_verdict_delay(500_000)
        for t in (0, 1):
            core.enqueue(t, 1500, ECN_ECT0)
        send(region, 0, ACT_DROP)
        send(region, 1, ACT_DROP)
        assert core.dequeue(100_000, QUEUE_C)[2] == SOURCE_FALLBACK  # 100 us < 500 us
        assert core.dequeue(600_000, QUEUE_C) == (DROP, 1, SOURCE_MODEL)
        stats = core.stats()
        assert stats["verdicts_late"] == 1 and stats["verdicts_applied"] == 1
