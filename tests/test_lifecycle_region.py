"""The region is the data path's and the daemon's alone, and outlives neither.

aqm-host publishes a sealed memfd under /dev/shm/NAME (a link to /proc/PID/fd/N):
nobody can truncate it under the core or the daemon; a killed host's name is recovered
at the next start; another user's object under the name is refused by both sides; the
one consumer holds a lock, and a data path re-accepts a consumer after a channel error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.channel import (
    IDX_STATE_CONS,
    ChannelError,
    ConsumerBusy,
    Region,
)

HOST = Path(os.environ.get("AQM_HOST", REPO_ROOT / "build" / "aqm-host"))
NOBODY = 65534


def shm_name(tag: str) -> str:
    return f"aqm-test-lc-{tag}-{os.getpid()}"


@pytest.fixture
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    n = shm_name(request.node.name.split("[")[0][-24:])
    yield n
    p = Path("/dev/shm", n)
    if p.is_symlink() or p.exists():
        p.unlink()


def start_host(name: str, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen([str(HOST), "--shm", name, "--rate-mbps", "10", *args],
                            text=True, **kw)  # type: ignore[call-overload]


def wait_region(name: str, timeout: float = 10) -> Region:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Region.open(Path("/dev/shm", name))
        except ChannelError:
            assert time.monotonic() < deadline, "the host never published its region"
            time.sleep(0.01)


def stop(p: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    return out or "", err or ""


# -- D: truncation ---------------------------------------------------------------------
def test_nobody_can_truncate_the_hosts_region_and_both_sides_run_on(name: str) -> None:
    host = start_host(name, "--load", "0.8", "--duration", "30", "--json",
                      stdout=subprocess.PIPE)
    try:
        with wait_region(name) as r:
            assert r.sealed and r.link is not None
            r.claim_consumer()
            for size in (0, 4096, r.size * 2):
                with pytest.raises(PermissionError):
                    os.truncate(Path("/dev/shm", name), size)
            time.sleep(0.3)
            assert len(r.read_states(4096)) > 0  # the daemon's side reads on
            assert r.producer_up
        out, _ = stop(host)
    finally:
        stop(host, signal.SIGKILL)
    assert host.returncode == 0
    rep = json.loads(out)
    assert rep["sealed"] and rep["states_published"] > 0 and rep["channel_errors"] == 0


# -- D: foreign regions ----------------------------------------------------------------
def test_the_host_refuses_another_users_object_under_its_name(name: str) -> None:
    p = Path("/dev/shm", name)
    p.write_bytes(b"\0" * 4096)
    os.chown(p, NOBODY, NOBODY)
    r = subprocess.run([str(HOST), "--shm", name, "--duration", "0.2"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert f"belongs to uid {NOBODY}" in r.stderr and "refusing" in r.stderr
    assert p.stat().st_uid == NOBODY  # left as it was, for the operator to look at


def test_a_region_of_another_user_is_refused(name: str) -> None:
    with Region.create(name, 64, 64) as mine:
        os.chown(mine.path, NOBODY, NOBODY)
        with pytest.raises(ChannelError, match=f"belongs to uid {NOBODY}"):
            Region.open(mine.path)


def test_a_region_others_can_open_is_refused(name: str) -> None:
    with Region.create(name, 64, 64) as mine:
        os.chmod(mine.path, 0o644)
        with pytest.raises(ChannelError, match="mode 0644"):
            Region.open(mine.path)


def test_a_link_to_anything_but_a_data_paths_descriptor_is_refused(name: str) -> None:
    with Region.create(name + "-real", 64, 64) as real:
        link = Path("/dev/shm", name)
        link.symlink_to(real.path)
        with pytest.raises(ChannelError, match="not to a data path's region"):
            Region.open(link)
        link.unlink()
        link.symlink_to(f"/proc/{os.getpid()}/fd/{real._fd}")
        os.lchown(link, NOBODY, NOBODY)
        with pytest.raises(ChannelError, match=f"link owned by uid {NOBODY}"):
            Region.open(link)


def test_a_linked_region_that_is_not_sealed_is_refused(name: str) -> None:
    with Region.create(name + "-src", 64, 64) as src:
        fd = os.memfd_create("unsealed", os.MFD_CLOEXEC)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, bytes(src._mm))
            link = Path("/dev/shm", name)
            link.symlink_to(f"/proc/{os.getpid()}/fd/{fd}")
            with pytest.raises(ChannelError, match="not sealed"):
                Region.open(link)
        finally:
            os.close(fd)


# -- C2: a killed host's name ----------------------------------------------------------
def test_a_killed_hosts_region_is_recovered_and_a_live_one_is_not_taken(name: str) -> None:
    first = start_host(name, "--duration", "30", stdout=subprocess.DEVNULL)
    try:
        wait_region(name).close()
        live = subprocess.run([str(HOST), "--shm", name, "--duration", "0.2"],
                              capture_output=True, text=True, timeout=30)
        assert live.returncode == 1 and "running data path" in live.stderr
        first.kill()
        first.wait(timeout=10)
        assert Path("/dev/shm", name).is_symlink()  # SIGKILL leaves the name behind
        again = subprocess.run([str(HOST), "--shm", name, "--duration", "0.3", "--json"],
                               capture_output=True, text=True, timeout=30)
    finally:
        stop(first, signal.SIGKILL)
    assert again.returncode == 0, again.stderr
    assert "stale region" in again.stderr and json.loads(again.stdout)["pi_updates"] > 0
    assert not os.path.lexists(Path("/dev/shm", name))


# -- 17.5: every way of stopping removes the name --------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_host_and_removes_its_name(name: str, sig: int) -> None:
    host = start_host(name, "--duration", "30", stdout=subprocess.PIPE)
    try:
        wait_region(name).close()
        out, _ = stop(host, sig)
    finally:
        stop(host, signal.SIGKILL)
    assert "decisions" in out
    assert not os.path.lexists(Path("/dev/shm", name))


def test_a_closed_log_pipe_stops_the_host_and_removes_its_name(name: str) -> None:
    host = subprocess.Popen([str(HOST), "--shm", name, "--stress", "100000000",
                             "--stress-log", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert host.stdout is not None and host.stderr is not None
    try:
        wait_region(name).close()
        host.stdout.read(1 << 16)
        host.stdout.close()  # the reader goes away: SIGPIPE at the next write
        host.wait(timeout=30)
        err = host.stderr.read().decode()
    finally:
        if host.poll() is None:
            host.kill()
    assert "decisions" in err and f"signal {int(signal.SIGPIPE)}" in err
    assert not os.path.lexists(Path("/dev/shm", name))


# -- 17.5: percentiles over the whole run ----------------------------------------------
def test_percentiles_describe_every_packet_of_a_long_run(tmp_path: Path) -> None:
    """3 x 2^20 packets, the first 2^20 slowed by a reader that stalls the decision
    log's pipe: the percentiles reported must be those of every packet logged."""
    n = 3 << 20
    host = subprocess.Popen([str(HOST), "--no-channel", "--stress", str(n), "--backlog",
                             "4000", "--stress-log", "-", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert host.stdout is not None and host.stderr is not None
    chunks, got = [], 0
    while True:
        b = host.stdout.read(1 << 16)
        if not b:
            break
        chunks.append(b)
        got += len(b)
        if got < (1 << 20) * 16:
            time.sleep(0.002)  # the first 2^20 packets wait for the reader
    rep = json.loads(host.stderr.read())
    assert host.wait(timeout=60) == 0
    log = np.frombuffer(b"".join(chunks), dtype="<u8").reshape(-1, 2)
    assert len(log) == n
    sent = (log[:, 1] & 0xFF00) >> 8 != 1  # not dropped
    soj = (log[:, 1] >> 16)[sent]
    queue_l = (log[:, 0] % 4 == 0) | (log[:, 0] % 4 == 3)  # ECT(1) and CE go to L
    for q, mask in (("c", ~queue_l[sent]), ("l", queue_l[sent])):
        s = np.sort(soj[mask])
        got_q = rep[f"sojourn_ms_{q}"]
        assert got_q["n"] == len(s)
        for key, pct in (("p50", 50), ("p90", 90), ("p99", 99)):
            want = s[int(pct / 100 * (len(s) - 1) + 0.5)] / 1e6
            assert got_q[key] == pytest.approx(want, rel=0.01, abs=1e-4), (q, key)


# -- C3: one consumer, and a consumer welcome again after a channel error ---------------
def test_a_second_consumer_is_refused_until_the_first_goes(name: str) -> None:
    with Region.create(name, 64, 64) as producer:
        first = Region.open(producer.path)
        assert first.claim_consumer() == 1
        second = Region.open(producer.path)
        with pytest.raises(ConsumerBusy, match="already has a consumer"):
            second.claim_consumer()
        first.close()  # as when the first daemon dies: its lock goes with it
        assert second.claim_consumer() == 2
        second.close()


def test_the_host_takes_a_consumer_back_after_a_channel_error(name: str) -> None:
    # A small state ring: the core looks at the consumer's index when it seems full.
    host = start_host(name, "--load", "0.5", "--duration", "30", "--json",
                      "--state-ring", "64", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with wait_region(name) as r:
            r.claim_consumer()
            time.sleep(0.2)
            assert len(r.read_states(65536)) > 0
            r.set_index(IDX_STATE_CONS, 0x7FFF0000)  # garbage: the host detaches
            deadline = time.monotonic() + 10
            while r.producer_up:
                assert time.monotonic() < deadline, "the host never saw the garbage"
                time.sleep(0.01)
        with wait_region(name) as again:
            again.claim_consumer()  # a new consumer: the host takes the channel back
            deadline = time.monotonic() + 10
            while not again.producer_up:
                assert time.monotonic() < deadline, "the host never re-attached"
                time.sleep(0.01)
            time.sleep(0.2)
            assert len(again.read_states(65536)) > 0
        out, err = stop(host)
    finally:
        stop(host, signal.SIGKILL)
    rep = json.loads(out)
    assert rep["channel_errors"] == 1 and rep["channel_reattaches"] == 1, err
