"""The channel: ring wrap-around, overflow, hostile regions refused, the mailbox.

The ABI agreement of the Python side with the compiled library is tests/test_abi.py.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aqm_bridge.abi import (
    IDX_STATE_CONS,
    IDX_STATE_PROD,
    IDX_VERDICT_CONS,
    IDX_VERDICT_PROD,
)
from aqm_bridge.channel import ChannelError, Region
from aqm_bridge.core import ECN_ECT0, ECN_ECT1, QUEUE_L, SOURCE_FALLBACK, SOURCE_MODEL, Core

U32 = 1 << 32


def name(tag: str) -> str:
    return f"aqm-test-{tag}-{os.getpid()}"


@pytest.fixture
def region() -> Iterator[Region]:
    r = Region.create(name("chan"), state_entries=64, verdict_entries=64)
    try:
        yield r
    finally:
        r.close(unlink=True)


class TestSharedMemory:
    def test_created_with_mode_0600(self, region: Region) -> None:
        assert stat.S_IMODE(os.stat(region.path).st_mode) == 0o600

    def test_create_refuses_an_existing_object(self, region: Region) -> None:
        with pytest.raises(FileExistsError):
            Region.create(region.path.name, 64, 64)

    @pytest.mark.parametrize("entries", [0, 63, 100, 1 << 23])
    def test_bad_ring_sizes_are_refused(self, entries: int) -> None:
        with pytest.raises(ChannelError, match="powers"):
            Region.create(name("bad"), state_entries=entries, verdict_entries=64)
        assert not Path("/dev/shm", name("bad")).exists()

    def test_open_sees_what_create_wrote(self, region: Region) -> None:
        core = Core(seed=1)
        core.attach(region)
        core.enqueue(5, 100, ECN_ECT1)
        with Region.open(region.path) as peer:
            assert peer.producer_up
            assert list(peer.read_states(8)["seq"]) == [0]

    def test_only_the_freebsd_device_attaches_to_a_scheduler(self, region: Region) -> None:
        with pytest.raises(ChannelError, match="not /dev/aqm_llm"):
            region.attach_scheduler(1)

    def test_bad_names_are_refused(self) -> None:
        for bad in ("", "a/b", "..", ".hidden"):
            with pytest.raises(ChannelError):
                Region.create(bad)


class TestWrapAround:
    @pytest.mark.parametrize("start", [0, U32 - 40])
    def test_state_ring_wraps_including_the_32_bit_indices(self, start: int) -> None:
        with Region.create(name("wrap"), 64, 64) as r:
            for which in (IDX_STATE_PROD, IDX_STATE_CONS, IDX_VERDICT_PROD, IDX_VERDICT_CONS):
                r.set_index(which, start)
            core = Core(seed=2)
            core.attach(r)  # both sides pick up the indices from the region
            peer = Region.open(r.path)
            seen: list[int] = []
            for i in range(1000):
                core.enqueue(i, 100, ECN_ECT1)
                states = peer.read_states(64)
                seen.extend(int(s) for s in states["seq"])
                assert peer.write_verdicts(states["seq"], np.full(len(states), 0)) == len(states)
                assert core.dequeue(i, QUEUE_L)[2] == SOURCE_MODEL
            assert seen == list(range(1000))
            stats = core.stats()
            assert stats["verdicts_applied"] == 1000 and stats["channel_errors"] == 0
            peer.close()


class TestOverflow:
    def test_full_state_ring_drops_and_counts_never_blocks(self, region: Region) -> None:
        core = Core(seed=3)
        core.attach(region)
        for i in range(100):
            core.enqueue(i, 100, ECN_ECT0)
        stats = core.stats()
        assert (stats["states_published"], stats["states_lost"]) == (64, 36)
        assert region.pending_states() == 64
        assert len(region.read_states(1000)) == 64
        core.enqueue(200, 100, ECN_ECT0)  # room again
        assert list(region.read_states(8)["seq"]) == [100]

    def test_full_verdict_ring_takes_what_fits(self, region: Region) -> None:
        seq = np.arange(100, dtype=np.uint64)
        assert region.write_verdicts(seq, np.zeros(100)) == 64
        assert region.write_verdicts(seq, np.zeros(100)) == 0

    def test_mismatched_arrays_are_refused(self, region: Region) -> None:
        with pytest.raises(ValueError):
            region.write_verdicts(np.arange(3), np.zeros(2))


def corrupt(path: Path, offset: int, value: int, fmt: str = "<u4") -> None:
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        np.frombuffer(mm, dtype=fmt, count=1, offset=offset)[...] = value


class TestHostileRegions:
    @pytest.mark.parametrize(("offset", "value", "message"), [
        (0, 0xDEADBEEF, "magic"),
        (4, 1, "ABI"),  # the previous ABI version
        (8, 72, "ABI"),  # header size
        (12, 96, "ABI"),  # state record size
        (16, 8, "ABI"),  # verdict record size
        (20, 100, "powers"),  # state ring entries not a power of two
        (24, 1 << 20, "powers"),  # verdict ring claims more than was mapped
        (40, 64, "offsets"),  # state ring offset
        (48, 12345, "offsets"),  # verdict ring offset
    ])
    def test_bad_headers_are_refused_with_a_clear_error(
            self, region: Region, offset: int, value: int, message: str) -> None:
        corrupt(region.path, offset, value, "<u8" if offset >= 40 else "<u4")
        with pytest.raises(ChannelError, match=message):
            Region.open(region.path)
        core = Core(seed=4)
        with pytest.raises(ValueError):
            core.attach(region)

    def test_a_truncated_region_is_refused(self, region: Region) -> None:
        os.truncate(region.path, 1000)
        with pytest.raises(ChannelError, match="powers|small"):
            Region.open(region.path)

    @pytest.mark.parametrize("size", [100, 703])
    def test_a_region_smaller_than_its_header_is_refused(self, region: Region,
                                                         size: int) -> None:
        os.truncate(region.path, size)
        with pytest.raises(ChannelError, match="too small"):
            Region.open(region.path)

    def test_core_refuses_a_mapping_smaller_than_the_header_claims(
            self, region: Region) -> None:
        class Short:
            address, size = region.address, region.size - 1

        with pytest.raises(ValueError, match="refused"):
            Core(seed=4).attach(Short())
        Core(seed=4).attach(region)  # the whole mapping is fine

    def test_an_empty_file_is_refused(self, tmp_path: Path) -> None:
        empty = tmp_path / "zero"
        empty.touch(mode=0o600)
        empty.chmod(0o600)
        with pytest.raises(ChannelError, match="empty"):
            Region.open(empty)

    def test_a_missing_file_is_a_channel_error(self, tmp_path: Path) -> None:
        with pytest.raises(ChannelError, match="cannot open"):
            Region.open(tmp_path / "nothing")

    def test_consumer_refuses_a_producer_index_beyond_the_ring(self, region: Region) -> None:
        region.set_index(IDX_STATE_PROD, 65)
        with pytest.raises(ChannelError, match="beyond"):
            region.read_states(8)
        with pytest.raises(ChannelError, match="beyond"):
            region.pending_states()

    def test_producer_refuses_an_impossible_verdict_consumer(self, region: Region) -> None:
        # A producer looks at the consumer's index when the ring seems full.
        assert region.write_verdicts(np.arange(64), np.zeros(64)) == 64
        region.set_index(IDX_VERDICT_CONS, 1000)
        with pytest.raises(ChannelError, match="beyond"):
            region.write_verdicts(np.arange(1), np.zeros(1))

    @pytest.mark.parametrize(("which", "value", "queued"), [
        (IDX_VERDICT_PROD, 65, 1), (IDX_VERDICT_PROD, U32 - 1, 1),
        (IDX_STATE_CONS, 100, 64)])  # the data path looks at cons when the ring seems full
    def test_core_detaches_from_impossible_indices_and_keeps_deciding(
            self, region: Region, which: int, value: int, queued: int) -> None:
        core = Core(seed=5)
        core.attach(region)
        for i in range(queued):
            core.enqueue(i, 100, ECN_ECT1)
        region.set_index(which, value)
        core.enqueue(100, 100, ECN_ECT1)
        for i in range(queued + 1):
            assert core.dequeue(200 + i, QUEUE_L)[2] == SOURCE_FALLBACK
        stats = core.stats()
        assert stats["channel_errors"] == 1
        assert not region.producer_up
        core.enqueue(4, 100, ECN_ECT1)  # detached: nothing more published
        assert core.stats()["states_published"] == stats["states_published"]


class TestControlBlock:
    def test_counters_are_published_at_tick(self, region: Region) -> None:
        core = Core(seed=6)
        core.attach(region)
        core.enqueue(10, 1500, ECN_ECT1)
        core.tick(20)
        published = region.counters()
        assert published["pkts_in"] == [0, 1] and published["states_published"] == 1
        assert published["now_ns"] == 20

    def test_parameter_mailbox_round_trip(self, region: Region) -> None:
        core = Core(seed=7)
        core.attach(region)
        core.tick(0)
        stop = threading.Event()

        def data_path() -> None:
            t = 0
            while not stop.is_set():
                t += 1000
                core.tick(t)

        thread = threading.Thread(target=data_path)
        thread.start()
        try:
            assert region.request_params(target_ns=5_000_000)["target_ns"] == 5_000_000
            with pytest.raises(ValueError, match="refused"):
                region.request_params(coupling_factor=0)
            with pytest.raises(ValueError, match="unknown"):
                region.request_params(bogus=1)
        finally:
            stop.set()
            thread.join()
        assert core.params()["target_ns"] == 5_000_000
        assert core.params()["coupling_factor"] == 2
        assert region.current_params()["target_ns"] == 5_000_000

    def test_mailbox_without_a_data_path_times_out(self, region: Region) -> None:
        with pytest.raises(TimeoutError):
            region.request_params(timeout_s=0.05, target_ns=5_000_000)

    def test_a_request_never_overwrites_an_unanswered_one(self, region: Region) -> None:
        core = Core(seed=8)
        core.attach(region)  # attached, but not ticking yet
        with pytest.raises(TimeoutError, match="did not answer"):
            region.request_params(timeout_s=0.02, target_ns=5_000_000)
        with pytest.raises(TimeoutError, match="still unanswered"):
            region.request_params(timeout_s=0.02, target_ns=7_000_000)
        core.tick(1_000)  # answers the first one, as it was posted
        assert core.params()["target_ns"] == 5_000_000
        thread = threading.Timer(0.05, core.tick, args=(2_000,))
        thread.start()
        assert region.request_params(timeout_s=2, target_ns=7_000_000)["target_ns"] == 7_000_000
        thread.join()
        assert core.params()["target_ns"] == 7_000_000
