"""`Region`: a mapped channel region, from the daemon's side (and the hosts' for tests).

On Linux the region is published as `/dev/shm/<name>`: aqm-host's is a sealed memfd (it
cannot be truncated or grown) that `/dev/shm/<name>` links to as `/proc/<pid>/fd/<n>`;
`Region.create` (tests, tools) makes a plain POSIX shared-memory object, mode 0600. On
FreeBSD it is `/dev/aqm_llm`, mapped. Whole batches cross into C in one call each: no
per-record Python loop, and the same acquire/release ordering as the C side.

    with Region.open("/dev/shm/aqm_llm") as r:
        states = r.read_states(4096)                  # numpy array of STATE_DTYPE
        r.write_verdicts(states["seq"], actions)      # how many fitted in the ring
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import stat
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._ffi import abi_table, ffi, lib
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
#: aqm_chan_hdr.consumer_gen (ABI v2): bumped by each consumer that claims the region.
CONSUMER_GEN_OFF = abi_table()["aqm_chan_hdr.consumer_gen"]
IDX_STATE_PROD, IDX_STATE_CONS, IDX_VERDICT_PROD, IDX_VERDICT_CONS = range(4)
#: What a sealing data path (aqm-host) publishes under /dev/shm/<name>.
_PROC_FD = re.compile(r"/proc/[0-9]+/fd/[0-9]+")
_SEALED = getattr(fcntl, "F_SEAL_SHRINK", 2) | getattr(fcntl, "F_SEAL_GROW", 4)
#: struct flock (Linux, 64-bit): l_type, l_whence, l_start, l_len, l_pid.
_FLOCK = "hhxxxxqqixxxx"


class ChannelError(Exception):
    """The region cannot be used: says what is wrong with it."""


class ConsumerBusy(ChannelError):
    """Another consumer (another aqmllmd) holds the region: exactly one may."""


def _producer_lock(fd: int, cmd: int) -> int:
    """The producer's OFD write lock on byte 0 (aqm-host holds it for its life):
    take it (F_OFD_SETLK) or look at it (F_OFD_GETLK: returns the lock type seen)."""
    if not hasattr(fcntl, "F_OFD_SETLK"):  # not Linux: no producer lock
        return int(fcntl.F_UNLCK)
    raw = fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
    return int(struct.unpack(_FLOCK, raw)[0])


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

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, owner: bool,
                 link: str | None = None, sealed: bool = False) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._owner = owner
        self._buf = ffi.from_buffer(mm)
        self._handle = ffi.new("char[]", lib.aqm_chan_handle_size())
        self._closed = False
        #: /proc/<pid>/fd/<n> when path links to a sealing data path's memfd.
        self.link = link
        #: The mapping cannot shrink or grow (F_SEAL_SHRINK | F_SEAL_GROW).
        self.sealed = sealed
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        self.consumer = False

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, state_entries: int = 65536,
               verdict_entries: int = 65536) -> Region:
        """A new POSIX shared-memory region, mode 0600, laid out and empty."""
        path = shm_path(name)
        size = int(lib.aqm_chan_region_bytes(state_entries, verdict_entries))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, size)
            _producer_lock(fd, getattr(fcntl, "F_OFD_SETLK", 0))  # held, as aqm-host's
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
        """Map an existing region and validate it against what was really mapped.

        A region must be this user's and private: a plain file (no link followed) or a
        sealing data path's memfd that `path` links to as /proc/<pid>/fd/<n>, a link
        made by this user; either owned by this user, mode 0600 (no group or other
        access). A linked memfd must be sealed against shrinking and growing. Anything
        else is refused with the reason.
        """
        path = Path(path)
        fd, link = _open_private(path)
        sealed = False
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                _check_private(path, st)
                sealed = _seals(fd) & _SEALED == _SEALED
                if link is not None and not sealed:
                    raise ChannelError(f"{path} links to a region that is not sealed "
                                       "against truncation: refused (aqm-host seals its)")
            elif not stat.S_ISCHR(st.st_mode):
                raise ChannelError(f"{path} is not a region (not a file or device)")
            size = st.st_size if stat.S_ISREG(st.st_mode) else _device_region_size(fd)
            if size <= 0:
                raise ChannelError(f"{path} is empty: no data path has laid out a region")
            if size > MAX_REGION_BYTES:
                raise ChannelError(f"{path} is {size} bytes, more than any valid region")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        region = cls(path, fd, mm, owner=False, link=link, sealed=sealed)
        try:
            _check(lib.aqm_chan_attach_view(region._handle, region._buf, size),
                   f"refusing channel {path}")
        except ChannelError:
            region.close()
            raise
        return region

    # -- the one consumer ----------------------------------------------------------------
    def claim_consumer(self) -> int:
        """Become the region's one consumer (what aqmllmd does at each attach).

        Takes an exclusive lock on the region (flock, released when this process dies
        or the region is closed); another consumer holding it raises ConsumerBusy. Then
        repairs the indices a consumer owns if a crash or a scribbler left them
        impossible, bumps consumer_gen (a data path that detached after a channel error
        takes the channel back when it changes) and sets the consumer flag. Returns the
        new consumer_gen.
        """
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ConsumerBusy(
                    f"{self.path} already has a consumer (another aqmllmd?): exactly one "
                    "may read a region; stop the other one first") from None
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOLCK):
                raise ChannelError(f"{self.path}: cannot lock the region: {e.strerror}") \
                    from e
            # A file that takes no locks (a device on some systems): claimed unlocked.
        sp, sc, vp, vc = self.indices()
        st_entries, v_entries = (int(x) for x in
                                 np.frombuffer(self._mm, dtype="<u4", count=2, offset=20))
        if (sp - sc) % (1 << 32) > st_entries:
            self.set_index(IDX_STATE_CONS, sp)
        if (vp - vc) % (1 << 32) > v_entries:
            self.set_index(IDX_VERDICT_PROD, vc)
        # Our private indices from the repaired shared ones (the geometry is unchanged).
        _check(lib.aqm_chan_attach_view(self._handle, self._buf, self.size),
               f"refusing channel {self.path}")
        gen = np.frombuffer(self._mm, dtype="<u4", count=1, offset=CONSUMER_GEN_OFF)
        gen[0] = (int(gen[0]) + 1) % (1 << 32)  # one aligned store; only we write it
        self.consumer = True
        self.consumer_up = True
        return int(gen[0])

    def still_current(self) -> bool:
        """Whether the path still names the object mapped here (a data path restarted
        under the same name publishes another one; one that stopped removes it)."""
        try:
            if self.link is not None and os.readlink(self.path) != self.link:
                return False
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._ident

    def producer_gone(self) -> bool:
        """A sealing data path (aqm-host) holds a lock on its region while it runs:
        True when that lock is free. Plain shm objects say nothing (False)."""
        if self.link is None:
            return False
        try:
            return _producer_lock(self._fd, getattr(fcntl, "F_OFD_GETLK", 0)) == fcntl.F_UNLCK
        except OSError:
            return False

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
        """Move a shared ring index: claim_consumer's repair, and tests playing a buggy
        or hostile peer."""
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


def _open_private(path: Path) -> tuple[int, str | None]:
    """Open path read-write without following a link anywhere but in the one form a
    sealing data path publishes: a link of ours to /proc/<pid>/fd/<n>."""
    link = None
    try:
        lst = os.lstat(path)
        if stat.S_ISLNK(lst.st_mode):
            link = os.readlink(path)
            if lst.st_uid != os.geteuid():
                raise ChannelError(f"{path} is a link owned by uid {lst.st_uid}, not by "
                                   f"uid {os.geteuid()}: refused (remove it)")
            if not _PROC_FD.fullmatch(link):
                raise ChannelError(f"{path} links to {link}, not to a data path's region: "
                                   "refused")
            fd = os.open(link, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_NOCTTY)
    except FileNotFoundError as e:
        what = f"its data path is gone ({link} is closed)" if link else e.strerror
        raise ChannelError(f"cannot open channel {path}: {what}") from e
    except OSError as e:
        raise ChannelError(f"cannot open channel {path}: {e.strerror}") from e
    return fd, link


def _check_private(path: Path, st: os.stat_result) -> None:
    """A region file must be ours and mode 0600: another user's (who may have made it
    first, to feed us states or read ours) is refused."""
    if st.st_uid != os.geteuid():
        raise ChannelError(f"{path} belongs to uid {st.st_uid}, not to uid {os.geteuid()}: "
                           "a foreign region, refused (remove it and restart the data path)")
    if st.st_mode & 0o077:
        raise ChannelError(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0600: "
                           "others could read or write it; refused")


def _seals(fd: int) -> int:
    try:
        return int(fcntl.fcntl(fd, fcntl.F_GET_SEALS))
    except (OSError, AttributeError):
        return 0  # not a memfd (a plain shm object, FreeBSD): no seals


def _device_region_size(fd: int) -> int:
    """A device (FreeBSD /dev/aqm_llm) has no file size: read it from the header."""
    head = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        return int(np.frombuffer(head, dtype="<u8", count=1, offset=32)[0])
    finally:
        head.close()
