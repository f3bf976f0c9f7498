"""`Region`: a mapped channel region, from the daemon's side (and the hosts' for tests).

On Linux the region is a POSIX shared-memory object (`/dev/shm/<name>`, mode 0600); on
FreeBSD it is `/dev/aqm_llm` mapped. Whole batches cross into C in one call each: no
per-record Python loop, and the same acquire/release ordering as the C side.

    with Region.open("/dev/shm/aqm_llm") as r:
        states = r.read_states(4096)                  # numpy array of STATE_DTYPE
        r.write_verdicts(states["seq"], actions)      # how many fitted in the ring
"""

from __future__ import annotations

import fcntl
import mmap
import os
import stat
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._ffi import ffi, lib
from .abi import FLAG_CONSUMER_UP, FLAG_PAUSED, FLAG_PRODUCER_UP, STATE_DTYPE
from .core import counters_to_dict, params_from_dict, params_to_dict

SHM_DIR = Path("/dev/shm")
CTRL_READ_RETRIES = 3
IDX_OFF = 64  # AQM_CHAN_IDX_OFF: four indices, one cache line (16 words) each
#: FreeBSD's _IOW('Q', 2, int32_t) from kmod/freebsd/aqm_llm_ioctl.h (the module's
#: build asserts the same number).
AQMLLM_ATTACH = 0x80045102
# Largest region we agree to map: the biggest rings the ABI allows.
MAX_REGION_BYTES = int(lib.aqm_chan_region_bytes(1 << 22, 1 << 22))


class ChannelError(Exception):
    """The region cannot be used: says what is wrong with it."""


def _check(code: int, what: str) -> int:
    if code < 0:
        raise ChannelError(f"{what}: {ffi.string(lib.aqm_chan_strerror(code)).decode()}")
    return code


def shm_path(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ChannelError(f"bad shared-memory name {name!r}: want a plain file name")
    return SHM_DIR / name


class Region:
    """One mapping of a channel region and this side's private ring state."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, owner: bool) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._owner = owner
        self._buf = ffi.from_buffer(mm)
        self._handle = ffi.new("char[]", lib.aqm_chan_handle_size())
        self._closed = False

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, state_entries: int = 65536,
               verdict_entries: int = 65536) -> Region:
        """A new POSIX shared-memory region, mode 0600, laid out and empty."""
        path = shm_path(name)
        size = int(lib.aqm_chan_region_bytes(state_entries, verdict_entries))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        region = cls(path, fd, mm, owner=True)
        try:
            _check(lib.aqm_chan_layout(region._handle, region._buf, size,
                                       state_entries, verdict_entries),
                   f"cannot lay out {path} with rings of {state_entries}/{verdict_entries}")
        except ChannelError:
            region.close(unlink=True)
            raise
        return region

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Region:
        """Map an existing region and validate it against what was really mapped."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            raise ChannelError(f"cannot open channel {path}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            size = st.st_size if stat.S_ISREG(st.st_mode) else _device_region_size(fd)
            if size <= 0:
                raise ChannelError(f"{path} is empty: no data path has laid out a region")
            if size > MAX_REGION_BYTES:
                raise ChannelError(f"{path} is {size} bytes, more than any valid region")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        region = cls(path, fd, mm, owner=False)
        try:
            _check(lib.aqm_chan_attach_view(region._handle, region._buf, size),
                   f"refusing channel {path}")
        except ChannelError:
            region.close()
            raise
        return region

    # -- identity ------------------------------------------------------------------------
    @property
    def address(self) -> int:
        return int(ffi.cast("uintptr_t", self._buf))

    @property
    def size(self) -> int:
        return len(self._mm)

    # -- rings ---------------------------------------------------------------------------
    def pending_states(self) -> int:
        return _check(lib.aqm_chan_pending_states(self._handle), f"state ring of {self.path}")

    def read_states(self, max_n: int) -> np.ndarray:
        """Up to max_n state records, oldest first, consumed from the ring."""
        out = np.empty(max_n, dtype=STATE_DTYPE)
        n = _check(lib.aqm_chan_read_states(self._handle, ffi.from_buffer(out), max_n),
                   f"state ring of {self.path}")
        return out[:n]

    def write_verdicts(self, seq: np.ndarray, action: np.ndarray, model_tag: int = 0) -> int:
        """Verdicts for these packets; returns how many fitted (the rest are not sent)."""
        seq = np.ascontiguousarray(seq, dtype=np.uint64)
        action = np.ascontiguousarray(action, dtype=np.uint32)
        if seq.shape != action.shape or seq.ndim != 1:
            raise ValueError(f"seq and action must be equal 1-D arrays: {seq.shape}, "
                             f"{action.shape}")
        if len(seq) == 0:
            return 0
        return _check(lib.aqm_chan_write_verdicts(
            self._handle, ffi.cast("uint64_t *", ffi.from_buffer(seq)),
            ffi.cast("uint32_t *", ffi.from_buffer(action)), model_tag, len(seq)),
            f"verdict ring of {self.path}")

    # -- control block -------------------------------------------------------------------
    def _read_ctrl(self) -> tuple[Any, Any, int, int]:
        cnt = ffi.new("struct aqm_counters *")
        cur = ffi.new("struct aqm_params *")
        now = ffi.new("uint64_t *")
        prob = ffi.new("uint64_t *")
        for _ in range(CTRL_READ_RETRIES):
            if lib.aqm_chan_read_ctrl(self._handle, cnt, cur, now, prob) == 0:
                return cnt, cur, int(now[0]), int(prob[0])
            time.sleep(0.001)
        raise ChannelError(f"{self.path}: counters never stable (a data path stuck mid-write?)")

    def counters(self) -> dict[str, Any]:
        """The data path's counters as last published (at its tick), consistent."""
        cnt, _, now, prob = self._read_ctrl()
        out = counters_to_dict(cnt)
        out["now_ns"] = now
        out["prob_base"] = prob
        return out

    def current_params(self) -> dict[str, int]:
        return params_to_dict(self._read_ctrl()[1])

    def request_params(self, timeout_s: float = 1.0, **kw: int) -> dict[str, int]:
        """Ask the data path to change DualPI2 parameters; returns those in force."""
        if not self.producer_up:
            raise TimeoutError(f"{self.path}: no data path attached to answer")
        p = params_from_dict(kw, base=self.current_params())
        deadline = time.monotonic() + timeout_s
        # One request at a time: the data path may still be copying an earlier one.
        while lib.aqm_chan_params_pending(self._handle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: an earlier parameter request is still "
                                   f"unanswered after {timeout_s} s")
            time.sleep(0.0005)
        req = lib.aqm_chan_request_params(self._handle, p)
        result = ffi.new("int32_t *")
        while not lib.aqm_chan_poll_params(self._handle, req, result):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.path}: data path did not answer in {timeout_s} s")
            time.sleep(0.0005)
        if result[0] != 0:
            raise ValueError(f"data path refused the parameters {kw} (error {result[0]}); "
                             "nothing changed")
        return params_to_dict(p)

    # -- flags ---------------------------------------------------------------------------
    def _flag(self, bit: int) -> bool:
        return bool(lib.aqm_chan_get_flags(self._handle) & bit)

    def _set_flag(self, bit: int, on: bool) -> None:
        lib.aqm_chan_change_flags(self._handle, bit if on else 0, 0 if on else bit)

    @property
    def paused(self) -> bool:
        """Fallback only: the data path ignores verdicts while this is set."""
        return self._flag(FLAG_PAUSED)

    @paused.setter
    def paused(self, on: bool) -> None:
        self._set_flag(FLAG_PAUSED, on)

    @property
    def producer_up(self) -> bool:
        return self._flag(FLAG_PRODUCER_UP)

    @property
    def consumer_up(self) -> bool:
        return self._flag(FLAG_CONSUMER_UP)

    @consumer_up.setter
    def consumer_up(self, on: bool) -> None:
        self._set_flag(FLAG_CONSUMER_UP, on)

    def indices(self) -> tuple[int, int, int, int]:
        """The shared ring indices: state prod, state cons, verdict prod, verdict cons."""
        raw = np.frombuffer(self._mm, dtype="<u4", count=4 * 16, offset=IDX_OFF)
        return tuple(int(x) for x in raw[::16])  # type: ignore[return-value]

    def attach_scheduler(self, sched: int) -> None:
        """FreeBSD: attach /dev/aqm_llm's region to dummynet scheduler `sched`."""
        if not stat.S_ISCHR(os.fstat(self._fd).st_mode):
            raise ChannelError(f"{self.path} is not /dev/aqm_llm: no scheduler to attach to")
        try:
            fcntl.ioctl(self._fd, AQMLLM_ATTACH, struct.pack("i", sched))
        except OSError as e:
            raise ChannelError(f"{self.path}: cannot attach to scheduler {sched}: "
                               f"{e.strerror}") from e

    def set_index(self, which: int, value: int) -> None:
        """Tests only: move a shared ring index as a buggy or hostile peer would."""
        lib.aqm_chan_set_index(self._handle, which, value)

    # -- lifetime ------------------------------------------------------------------------
    def close(self, unlink: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf = None
        try:
            self._mm.close()
        except BufferError:
            pass  # a numpy view still holds it; the mapping goes with the last view
        os.close(self._fd)
        if unlink:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Region:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(unlink=self._owner)


def _device_region_size(fd: int) -> int:
    """A device (FreeBSD /dev/aqm_llm) has no file size: read it from the header."""
    head = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        return int(np.frombuffer(head, dtype="<u8", count=1, offset=32)[0])
    finally:
        head.close()
