"""The channel ABI seen from Python agrees with the compiled library (aqm_abi_describe).

A layout change in bridge/aqm_channel.h that the numpy dtypes, the cffi declarations or
the constants of aqm_bridge do not follow fails here, not as corrupted memory later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aqm_bridge import abi, channel, core
from aqm_bridge._ffi import abi_table, ffi, lib
from aqm_bridge.abi import STATE_DTYPE, VERDICT_DTYPE
from aqm_bridge.channel import Region
from aqm_bridge.core import ECN_ECT0, ECN_ECT1, Core

ABI = abi_table()
HDR_DTYPE = np.dtype({
    "names": ["magic", "abi_version", "hdr_size", "state_rec_size", "verdict_rec_size",
              "state_ring_entries", "verdict_ring_entries", "flags", "region_size",
              "state_ring_off", "verdict_ring_off", "producer_gen", "consumer_gen"],
    "formats": ["<u4"] * 8 + ["<u8"] * 3 + ["<u4"] * 2,
    "offsets": [0, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 60],
    "itemsize": 64,
})


@pytest.fixture
def region() -> Iterator[Region]:
    r = Region.create(f"aqm-test-abi-{os.getpid()}", state_entries=128, verdict_entries=64)
    try:
        yield r
    finally:
        r.close(unlink=True)


def test_constants() -> None:
    assert abi.MAGIC == ABI["magic"] and abi.ABI_VERSION == ABI["abi_version"]
    assert channel.IDX_OFF == ABI["idx_off"]
    assert ABI["ctrl_off"] == ABI["idx_off"] + 4 * 64
    assert ABI["rings_off"] == ABI["ctrl_off"] + ABI["sizeof.aqm_chan_ctrl"]
    assert (abi.QUEUE_C, abi.QUEUE_L) == (core.QUEUE_C, core.QUEUE_L)
    assert (abi.ACT_ENQUEUE, abi.ACT_DROP, abi.ACT_MARK) == (core.PASS, core.DROP, core.MARK)
    header = (Path(__file__).resolve().parents[1] / "bridge" / "aqm_channel.h").read_text()
    guards = dict(re.findall(r"#define\s+AQM_GUARD_(NONE|STEP|DUALPI2)\s+(\d+)u", header))
    assert {k.lower(): int(v) for k, v in guards.items()} == abi.VERDICT_GUARDS


@pytest.mark.parametrize(("dtype", "struct"), [(STATE_DTYPE, "aqm_state_rec"),
                                               (VERDICT_DTYPE, "aqm_verdict_rec")])
def test_record_dtypes(dtype: np.dtype, struct: str) -> None:
    assert dtype.itemsize == ABI[f"sizeof.{struct}"]
    described = {k.split(".", 1)[1] for k in ABI if k.startswith(f"{struct}.")}
    assert set(dtype.names) == described
    for field in dtype.names:
        assert dtype.fields[field][1] == ABI[f"{struct}.{field}"], field


def test_header_dtype() -> None:
    assert HDR_DTYPE.itemsize == ABI["sizeof.aqm_chan_hdr"]
    for field in ("flags", "region_size", "producer_gen", "consumer_gen"):
        assert HDR_DTYPE.fields[field][1] == ABI[f"aqm_chan_hdr.{field}"]


def test_cffi_declarations() -> None:
    for struct in ("aqm_params", "aqm_counters", "aqm_pkt"):
        assert ffi.sizeof(f"struct {struct}") == ABI[f"sizeof.{struct}"], struct
    assert ffi.sizeof("struct aqm_params") * 2 == (ABI["aqm_chan_ctrl.now_ns"]
                                                   - ABI["aqm_chan_ctrl.params"])
    assert lib.aqm_chan_handle_size() % 8 == 0


def test_abi_v2_fields() -> None:
    assert ABI["abi_version"] == 2
    assert ABI["sizeof.aqm_params"] == 64 and ABI["sizeof.aqm_chan_hdr"] == 64
    for field in ("verdict_guard", "step_thresh_pkts", "min_qlen_step", "harm_budget_pct",
                  "reserved0"):
        assert ffi.offsetof("struct aqm_params", field) == ABI[f"aqm_params.{field}"], field
    assert ABI["aqm_params.reserved0"] == 60
    for field in ("pi_updates", "verdicts_capped", "states_slot_busy"):
        assert ffi.offsetof("struct aqm_counters", field) == ABI[f"aqm_counters.{field}"]
    assert ABI["aqm_chan_hdr.producer_gen"] == 56 and ABI["aqm_chan_hdr.consumer_gen"] == 60
    assert ABI["sizeof.aqm_chan_ctrl"] % 64 == 0
    assert ABI["aqm_chan_ctrl.counters"] + ABI["sizeof.aqm_counters"] <= ABI[
        "sizeof.aqm_chan_ctrl"]


def test_reserved0_is_refused_unless_zero() -> None:
    p = core.params_from_dict({})
    assert p.reserved0 == 0 and lib.aqm_params_validate(p) == 0
    p.reserved0 = 1
    assert lib.aqm_params_validate(p) != 0


def test_each_attach_bumps_producer_gen(region: Region) -> None:
    def gen() -> int:
        h = np.frombuffer(region.path.read_bytes(), dtype=HDR_DTYPE, count=1)[0]
        return int(h["producer_gen"])

    assert gen() == 0
    c = Core(seed=1)
    c.attach(region)
    assert gen() == 1
    Core(seed=2).attach(region)
    assert gen() == 2


def test_a_fresh_header_as_laid_out(region: Region) -> None:
    h = np.frombuffer(region.path.read_bytes(), dtype=HDR_DTYPE, count=1)[0]
    size = int(lib.aqm_chan_region_bytes(128, 64))
    assert region.size == size == ABI["rings_off"] + 128 * 80 + 64 * 16
    assert (h["magic"], h["abi_version"], h["hdr_size"]) == (ABI["magic"], abi.ABI_VERSION, 64)
    assert (h["state_rec_size"], h["verdict_rec_size"]) == (80, 16)
    assert (h["state_ring_entries"], h["verdict_ring_entries"]) == (128, 64)
    assert (h["region_size"], h["state_ring_off"]) == (size, ABI["rings_off"])
    assert h["verdict_ring_off"] == ABI["rings_off"] + 128 * 80


def test_state_records_read_back_field_by_field(region: Region) -> None:
    c = Core(seed=1)
    c.attach(region)
    c.enqueue(1_000, 1234, ECN_ECT0)
    c.enqueue(2_000, 99, ECN_ECT1)
    s = region.read_states(8)
    assert list(s["seq"]) == [0, 1] and list(s["ts_ns"]) == [1_000, 2_000]
    assert list(s["len"]) == [1234, 99] and list(s["ecn"]) == [ECN_ECT0, ECN_ECT1]
    assert list(s["queue"]) == [abi.QUEUE_C, abi.QUEUE_L]
    assert s["backlog_pkts"].tolist() == [[1, 0], [1, 1]]
    assert s["backlog_bytes"].tolist() == [[1234, 0], [1234, 99]]
    assert list(s["flags"] & abi.STATE_FLAG_FIRST) == [1, 1]
    assert all(s["deadline_ns"] >= s["ts_ns"])


def test_verdicts_land_in_the_ring_as_the_dtype_says(region: Region) -> None:
    seq = np.array([7, 1 << 40, 3], dtype=np.uint64)
    assert region.write_verdicts(seq, np.array([2, 1, 0]), model_tag=0xABCD) == 3
    off = ABI["rings_off"] + 128 * 80
    ring = np.frombuffer(region.path.read_bytes(), dtype=VERDICT_DTYPE, count=3, offset=off)
    assert ring["seq"].tolist() == seq.tolist()
    assert ring["action"].tolist() == [2, 1, 0] and set(ring["model_tag"]) == {0xABCD}
    assert region.indices() == (0, 0, 3, 0)
