"""The core keeps every verdict it was given, publishes honest deadlines, and survives its
clock, its re-attachment and a mailbox left pending (issue 17), and takes the L4S step in
packets and min_qlen_step as Linux sch_dualpi2 does."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aqm_bridge._ffi import abi_table, ffi, lib
from aqm_bridge.channel import Region
from aqm_bridge.core import (
    ECN_ECT0,
    ECN_ECT1,
    MARK,
    PASS,
    QUEUE_C,
    QUEUE_L,
    SOURCE_MODEL,
    Core,
    default_params,
    params_from_dict,
)

ACT_ENQUEUE, ACT_DROP, ACT_MARK = 0, 1, 2
GUARD_NONE = 0
MS = 1_000_000
US = 1_000
ABI = abi_table()
EINVAL = -22


@pytest.fixture
def region() -> Iterator[Region]:
    r = Region.create(f"aqm-test-robust-{os.getpid()}", state_entries=4096,
                      verdict_entries=4096)
    try:
        yield r
    finally:
        r.close(unlink=True)


def answer_all(region: Region, action: int = ACT_ENQUEUE) -> np.ndarray:
    states = region.read_states(4096)
    if len(states):
        n = region.write_verdicts(states["seq"], np.full(len(states), action, np.uint32))
        assert n == len(states)
    return states


class TestVerdictSlots:
    def test_a_classic_backlog_beside_l_traffic_loses_no_verdict(self, region: Region) -> None:
        """3000 classic packets wait while the WRR serves about nine L packets per classic
        one: the L packets enqueued meanwhile run more than AQM_VSLOTS sequence numbers
        ahead of the oldest classic packet, and must not take its verdict's slot."""
        core = Core(seed=1, verdict_guard=GUARD_NONE)
        core.attach(region)
        now = 0
        for _ in range(3000):
            core.enqueue(now, 1500, ECN_ECT0)
        answer_all(region)
        classic_model, classic_total = 0, 0
        while core.backlog(QUEUE_C):
            now += 1200  # 10 Gbit/s
            core.enqueue(now, 1500, ECN_ECT1)
            answer_all(region)
            core.tick(now)
            q = core.select(now)
            assert q is not None
            _, _, source = core.dequeue(now, q)
            if q == QUEUE_C:
                classic_total += 1
                classic_model += source == SOURCE_MODEL
        stats = core.stats()
        assert classic_total == 3000
        assert stats["pkts_in"][QUEUE_L] > 20_000  # the span really exceeded 16384
        assert classic_model == 3000, f"{3000 - classic_model} classic verdicts lost"
        assert stats["verdicts_late"] == stats["verdicts_bad"] == 0
        assert stats["states_slot_busy"] == 0

    def test_a_verdict_for_a_packet_gone_is_late_in_either_queue(self, region: Region) -> None:
        core = Core(seed=2)
        core.attach(region)
        core.enqueue(0, 1500, ECN_ECT0)
        core.enqueue(0, 1500, ECN_ECT1)
        core.enqueue(0, 1500, ECN_ECT1)
        region.read_states(8)
        core.dequeue(10, QUEUE_L)
        region.write_verdicts(np.array([1, 0, 2], np.uint64), np.zeros(3, np.uint32))
        core.tick(20)
        stats = core.stats()
        assert stats["verdicts_late"] == 1 and stats["verdicts_bad"] == 0
        assert core.verdict_ready(0) and core.verdict_ready(2) and not core.verdict_ready(1)


class TestDeadlines:
    @staticmethod
    def _busy_link(core: Core, region: Region) -> int:
        """A 12 Mbit/s link (one 1500-byte packet per ms) with both queues backlogged.

        The PI target is 1 s so that p' stays 0: in overload DualPI2 drops L packets,
        which do not move the WRR credit, and the classic queue would starve."""
        now = 0
        for _ in range(60):
            core.enqueue(now, 1500, ECN_ECT0)
        for _ in range(400):
            core.enqueue(now, 1500, ECN_ECT1)
        for _ in range(300):
            now += MS
            core.enqueue(now, 1500, ECN_ECT1)  # L keeps its queue
            q = core.select(now)
            assert q is not None
            core.dequeue(now, q)
        region.read_states(4096)
        return now

    def test_a_classic_deadline_follows_the_classic_queues_real_service(
            self, region: Region) -> None:
        core = Core(seed=3, target_ns=1_000_000_000)
        core.attach(region)
        now = self._busy_link(core, region)
        ahead = core.backlog(QUEUE_C)
        assert 10 <= ahead <= 40 and core.backlog(QUEUE_L) > 100
        _, _, seq = core.enqueue(now, 1500, ECN_ECT0)
        rec = region.read_states(1)[0]
        estimate = int(rec["deadline_ns"]) - now
        # Serve until it leaves: the classic queue gets 10 % of the link while L waits.
        for _ in range(2000):
            now += MS
            core.enqueue(now, 1500, ECN_ECT1)
            q = core.select(now)
            assert q is not None
            if core.dequeue(now, q)[1] == seq:
                break
        else:
            pytest.fail("the classic packet never left")
        real = now - int(rec["ts_ns"])
        assert real > 5 * ahead * MS  # the share is what makes it long
        assert estimate == pytest.approx(real, rel=0.15)

    def test_an_l_deadline_counts_its_own_queue(self, region: Region) -> None:
        core = Core(seed=4, target_ns=1_000_000_000)
        core.attach(region)
        now = self._busy_link(core, region)
        ahead_bytes = core.backlog(QUEUE_L) * 1500
        core.enqueue(now, 1500, ECN_ECT1)
        rec = region.read_states(1)[0]
        # L drains at 90 % of 1.5 MB/s: ahead_bytes / 1.35 MB/s (1.5 ms own time aside).
        expected = ahead_bytes / 1.35e6 * 1e9
        assert int(rec["deadline_ns"]) - now == pytest.approx(expected, rel=0.1)

    def test_before_any_rate_is_known_a_queued_packet_is_not_already_expired(
            self, region: Region) -> None:
        core = Core(seed=5)
        core.attach(region)
        core.enqueue(1000, 1500, ECN_ECT0)
        core.enqueue(2000, 1500, ECN_ECT0)
        core.enqueue(3000, 1500, ECN_ECT1)
        first, second, l4s = region.read_states(3)
        assert first["deadline_ns"] == first["ts_ns"]  # nothing ahead, link idle
        assert second["deadline_ns"] == second["ts_ns"] + default_params()["target_ns"]
        assert l4s["deadline_ns"] == l4s["ts_ns"]  # an empty L queue goes first

    def test_the_first_estimate_comes_within_a_few_packets(self, region: Region) -> None:
        core = Core(seed=6)
        core.attach(region)
        for _ in range(20):
            core.enqueue(0, 1500, ECN_ECT0)
        for k in range(1, 7):
            core.dequeue(k * 100 * US, QUEUE_C)  # 15 MB/s
        core.enqueue(600 * US, 1500, ECN_ECT0)
        rec = region.read_states(64)[-1]
        assert rec["rate_bps"] == pytest.approx(15_000_000, rel=0.01)
        wait = int(rec["deadline_ns"]) - 600 * US
        assert wait == pytest.approx(14 * 100 * US, rel=0.05)  # 14 packets ahead


class TestTime:
    def test_a_sojourn_near_2_to_the_63_raises_p_instead_of_wrapping(self) -> None:
        core = Core(seed=7)
        core.enqueue(0, 1500, ECN_ECT0)
        core.tick((1 << 63) + (1 << 40))
        assert core.prob_base() > 0

    def test_the_pi_schedule_resynchronises_when_the_clock_goes_back(self) -> None:
        core = Core(seed=8, now_ns=10_000 * MS)
        core.enqueue(10_000 * MS, 1500, ECN_ECT0)
        core.tick(10_100 * MS)
        before = core.stats()["pi_updates"]
        assert before > 0
        # The clock jumps back nine seconds; updates go on at the usual interval.
        core.enqueue(1_000 * MS, 1500, ECN_ECT1)
        for k in range(1, 11):
            core.tick(1_000 * MS + k * 16 * MS)
        assert core.stats()["pi_updates"] >= before + 9


class TestAttach:
    def test_a_new_instance_continues_above_the_sequence_numbers_published(
            self, region: Region) -> None:
        old = Core(seed=9)
        old.attach(region)
        for t in range(5):
            old.enqueue(t, 1500, ECN_ECT0)
        assert list(region.read_states(8)["seq"]) == [0, 1, 2, 3, 4]
        old.detach()
        new = Core(seed=10)
        new.attach(region)
        _, _, seq = new.enqueue(100, 1500, ECN_ECT0)
        assert seq == 5
        # A verdict the daemon had in flight for the old instance's packet 2 ...
        region.write_verdicts(np.array([2], np.uint64), np.array([ACT_DROP], np.uint32))
        new.tick(200)
        stats = new.stats()
        assert stats["verdicts_late"] == 1 and stats["verdicts_applied"] == 0
        assert new.dequeue(300, QUEUE_C)[0] == PASS

    def test_a_hostile_last_seq_is_taken_only_up_to_2_to_the_62(self, region: Region) -> None:
        old = Core(seed=11)
        old.attach(region)
        old.enqueue(0, 1500, ECN_ECT0)
        old.detach()
        off = ABI["rings_off"] + ABI["aqm_state_rec.seq"]
        with open(region.path, "r+b") as f:
            f.seek(off)
            f.write((2**64 - 1).to_bytes(8, "little"))
        new = Core(seed=12)
        new.attach(region)
        assert new.enqueue(1, 1500, ECN_ECT0)[2] == 2**62 + 1

    def test_a_fresh_region_starts_at_zero(self, region: Region) -> None:
        core = Core(seed=13)
        core.attach(region)
        assert core.enqueue(0, 1500, ECN_ECT0)[2] == 0


class _Daemon:
    """The daemon's side of the mailbox, through the channel library."""

    def __init__(self, region: Region) -> None:
        self.h = ffi.new("char[]", lib.aqm_chan_handle_size())
        assert lib.aqm_chan_attach_view(self.h, ffi.cast("void *", region.address),
                                        region.size) == 0

    def post(self, **kw: int) -> int:
        return int(lib.aqm_chan_request_params(self.h, params_from_dict(kw)))

    def answer(self, req: int) -> int | None:
        result = ffi.new("int32_t *")
        return int(result[0]) if lib.aqm_chan_poll_params(self.h, req, result) else None


class TestMailboxAtAttach:
    def test_a_request_pending_at_attach_gets_its_own_answer(self, region: Region) -> None:
        daemon = _Daemon(region)
        old = Core(seed=14)
        old.attach(region)
        req = daemon.post(target_ns=5 * MS)
        old.tick(1)
        assert daemon.answer(req) == 0  # accepted, as requested
        req = daemon.post(coupling_factor=0)  # invalid; the data path goes away
        old.detach()
        new = Core(seed=15)
        new.attach(region)
        assert daemon.answer(req) is None  # not answered with the previous result
        new.tick(2)
        assert daemon.answer(req) == EINVAL

    def test_a_valid_request_pending_at_attach_is_applied(self, region: Region) -> None:
        daemon = _Daemon(region)
        req = daemon.post(target_ns=7 * MS)
        core = Core(seed=16)
        core.attach(region)
        core.tick(1)
        assert daemon.answer(req) == 0 and core.params()["target_ns"] == 7 * MS


class TestStepInPackets:
    """Hand-computed against Linux sch_dualpi2: with the step in packets, an L packet is
    marked when the L queue it leaves behind holds more than step_thresh_pkts packets;
    min_qlen_step (L queue length at the packet's enqueue) gates the step either way."""

    def test_step_threshold_in_packets(self) -> None:
        core = Core(seed=17, step_thresh_pkts=3)
        for _ in range(6):
            core.enqueue(0, 1500, ECN_ECT1)
        # Left behind: 5, 4, 3, 2, 1, 0 packets; "more than 3" marks the first two.
        got = [core.dequeue(0, QUEUE_L)[0] for _ in range(6)]
        assert got == [MARK, MARK, PASS, PASS, PASS, PASS]
        assert core.stats()["step_marks"] == 2

    def test_in_packets_the_sojourn_does_not_matter(self) -> None:
        core = Core(seed=18, step_thresh_pkts=2)
        core.enqueue(0, 1500, ECN_ECT1)
        core.enqueue(0, 1500, ECN_ECT1)
        assert [core.dequeue(50 * MS, QUEUE_L)[0] for _ in range(2)] == [PASS, PASS]

    def test_min_qlen_step_with_the_step_in_time(self) -> None:
        core = Core(seed=19, min_qlen_step=2)
        for _ in range(4):
            core.enqueue(0, 1500, ECN_ECT1)  # L queue held 0, 1, 2, 3 at their enqueue
        got = [core.dequeue(5 * MS, QUEUE_L)[0] for _ in range(4)]
        assert got == [PASS, PASS, MARK, MARK]

    def test_min_qlen_step_with_the_step_in_packets(self) -> None:
        core = Core(seed=20, step_thresh_pkts=1, min_qlen_step=3)
        for _ in range(5):
            core.enqueue(0, 1500, ECN_ECT1)
        # Left behind 4, 3, 2, 1, 0 (> 1 for the first three); held 0..4 at enqueue (>= 3
        # for the last two): only where both hold.
        got = [core.dequeue(0, QUEUE_L)[0] for _ in range(5)]
        assert got == [PASS, PASS, PASS, PASS, PASS]
        core = Core(seed=21, step_thresh_pkts=1, min_qlen_step=1)
        for _ in range(5):
            core.enqueue(0, 1500, ECN_ECT1)
        got = [core.dequeue(0, QUEUE_L)[0] for _ in range(5)]
        assert got == [PASS, MARK, MARK, PASS, PASS]

    def test_the_step_never_touches_the_classic_queue(self) -> None:
        core = Core(seed=22, step_thresh_pkts=1)
        for _ in range(5):
            core.enqueue(0, 1500, ECN_ECT0)
        assert [core.dequeue(0, QUEUE_C)[0] for _ in range(5)] == [PASS] * 5

    @pytest.mark.parametrize(("name", "value"), [
        ("step_thresh_pkts", 16384), ("min_qlen_step", 2**32 - 1)])
    def test_out_of_range_is_refused(self, name: str, value: int) -> None:
        with pytest.raises(ValueError):
            Core(**{name: value})


def test_the_headers_verdict_guard_default_is_what_the_core_does() -> None:
    header = (Path(__file__).resolve().parents[1] / "bridge" / "aqm_channel.h").read_text()
    m = re.search(r"uint32_t verdict_guard;\s*/\*\s*AQM_GUARD_\*; default (\w+)", header)
    assert m is not None
    value = int(re.search(rf"#define\s+AQM_GUARD_{m.group(1)}\s+(\d+)u", header).group(1))
    assert value == default_params()["verdict_guard"]
