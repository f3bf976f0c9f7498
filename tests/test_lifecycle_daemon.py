"""aqmllmd's side of the lifecycle, run as the README runs it (build/aqm-host --shm NAME,
aqmllmd --channel /dev/shm/NAME --control ipc://...): it follows a data path restarted
under the same name, it is the region's one consumer and its control endpoint's one
server, and a region that keeps failing costs it neither CPU nor a flood of log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.channel import IDX_STATE_PROD, ChannelError, Region
from aqm_bridge.core import Core
from aqmllmd.config import load
from aqmllmd.ctl import Client
from aqmllmd.default_model import INTERIM_MODEL
from aqmllmd.metrics import Metrics
from aqmllmd.model import load as load_model
from aqmllmd.server import Server

HOST = REPO_ROOT / "build" / "aqm-host"


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.name = f"aqm-test-lcd-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.shm = Path("/dev/shm", self.name)
        self.all: list[subprocess.Popen[bytes]] = []

    def host(self, *args: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([str(HOST), "--shm", self.name, "--rate-mbps", "10", "--load",
                              "0.5", "--duration", "60", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.all.append(p)
        return p

    def daemon(self, control: str, log: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as err:
            p = subprocess.Popen([sys.executable, "-m", "aqmllmd.main", "--channel",
                                  str(self.shm), "--control", control, "--metrics", "",
                                  "--seed", "1"], stderr=err)
        self.all.append(p)
        return p

    def log(self, name: str) -> str:
        return (self.tmp / name).read_text(errors="replace")

    def watch(self, timeout: float = 15) -> Region:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return Region.open(self.shm)
            except ChannelError:
                assert time.monotonic() < deadline, "no region"
                time.sleep(0.01)

    def close(self) -> None:
        for p in self.all:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.all:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.path.lexists(self.shm):
            self.shm.unlink()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


def wait_verdicts(region: Region, timeout: float = 20) -> None:
    """Until the daemon has consumed states and written verdicts on this region."""
    deadline = time.monotonic() + timeout
    while True:
        _, state_cons, verdict_prod, _ = region.indices()
        if state_cons > 0 and verdict_prod > 0:
            return
        assert time.monotonic() < deadline, "no verdicts on this region"
        time.sleep(0.05)


def status(control: str) -> dict:
    c = Client(control, timeout_ms=3000)
    try:
        return c.call("status")
    finally:
        c.close()


def test_the_daemon_follows_a_data_path_restarted_under_the_same_name(procs: Procs) -> None:
    control = f"ipc://{procs.tmp}/ctl.sock"
    first = procs.host()
    with procs.watch() as a:
        daemon = procs.daemon(control, "d.log")
        wait_verdicts(a)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=10) == 0
    procs.host()  # the same name again: a new region
    with procs.watch() as b:
        wait_verdicts(b)  # verdicts resume, no daemon restart
        st = status(control)
    assert daemon.poll() is None and st["attached"] and st["channel_sealed"]
    assert "replaced" in procs.log("d.log")


def test_a_second_daemon_on_the_region_refuses(procs: Procs) -> None:
    procs.host()
    with procs.watch() as r:
        first = procs.daemon(f"ipc://{procs.tmp}/one.sock", "one.log")
        wait_verdicts(r)
        second = procs.daemon(f"ipc://{procs.tmp}/two.sock", "two.log")
        assert second.wait(timeout=30) == 1
        assert "already has a consumer" in procs.log("two.log")
        before = r.indices()[2]
        time.sleep(0.5)
        assert r.indices()[2] > before  # the first one serves on
    assert first.poll() is None and status(f"ipc://{procs.tmp}/one.sock")["attached"]


def test_a_second_daemon_on_the_control_endpoint_refuses_and_leaves_it(
        procs: Procs) -> None:
    control = f"ipc://{procs.tmp}/ctl.sock"
    procs.host()
    with procs.watch() as r:
        first = procs.daemon(control, "one.log")
        wait_verdicts(r)
    second = procs.daemon(control, "two.log")
    assert second.wait(timeout=30) == 1
    assert "another aqmllmd's" in procs.log("two.log")
    assert (procs.tmp / "ctl.sock").exists()  # not taken over, not deleted
    assert first.poll() is None and status(control)["attached"]


def test_a_region_that_keeps_failing_backs_off_and_logs_little(procs: Procs) -> None:
    """A scribbler keeps the state ring's producer index impossible for 4 s: the daemon
    refuses the channel, waiting twice as long each time, in a few log lines; then
    attaches again once the region is sane."""
    control = f"ipc://{procs.tmp}/ctl.sock"
    region = Region.create(procs.name, 64, 64)
    core = Core(seed=1)
    core.attach(region)
    stop = threading.Event()

    def scribble() -> None:
        rng = np.random.default_rng(1)
        while not stop.is_set():
            region.set_index(IDX_STATE_PROD, int(rng.integers(1 << 20, 1 << 31)))
            time.sleep(0.001)

    try:
        procs.daemon(control, "d.log")
        deadline = time.monotonic() + 20
        while not region.consumer_up:
            assert time.monotonic() < deadline, "the daemon never attached"
            time.sleep(0.02)
        t = threading.Thread(target=scribble)
        t.start()
        time.sleep(4)
        stop.set()
        t.join()
        refusals = status(control)["channel_refusals"]
        lines = [ln for ln in procs.log("d.log").splitlines()
                 if " WARNING " in ln or " ERROR " in ln]
        region.set_index(IDX_STATE_PROD, region.indices()[1])  # sane again
        deadline = time.monotonic() + 15
        while not status(control)["attached"]:
            assert time.monotonic() < deadline, "never attached again"
            time.sleep(0.1)
    finally:
        stop.set()
        region.close(unlink=True)
    # 4 s of failures: attempts after 0.2, 0.4, 0.8, 1.6 s... (thousands before).
    assert 1 <= refusals <= 8, refusals
    assert len(lines) <= 4, lines


@pytest.mark.parametrize("how", ["owner", "mode"])
def test_the_daemon_refuses_a_region_that_is_not_its_own(tmp_path: Path, how: str) -> None:
    """Another user made /dev/shm/NAME first (or left it open to others): the root
    daemon does not consume it, and status says why."""
    region = Region.create(f"aqm-test-lcd-foreign-{os.getpid()}", 64, 64)
    try:
        if how == "owner":
            os.chown(region.path, 65534, 65534)
        else:
            os.chmod(region.path, 0o666)
        cfg = load(None, {"channel": str(region.path), "metrics": "",
                          "control": f"ipc://{tmp_path}/c.sock"})
        server = Server(cfg, load_model(INTERIM_MODEL), Metrics(lambda: None))
        assert server._attach() is None
        st = server.status()
        assert not st["attached"] and not region.consumer_up
        assert ("belongs to uid 65534" if how == "owner" else "mode 0666") in \
            st["channel_error"]
    finally:
        region.close(unlink=True)


def test_a_data_path_that_left_after_a_channel_error_is_served_again(procs: Procs) -> None:
    """Garbage in the state ring's consumer index makes the host's core detach (one
    channel error) while aqmllmd, stopped meanwhile, saw nothing wrong: aqmllmd notices
    the data path left, claims the region again, and the host re-attaches."""
    control = f"ipc://{procs.tmp}/ctl.sock"
    host = subprocess.Popen([str(HOST), "--shm", procs.name, "--rate-mbps", "10", "--load",
                             "0.5", "--duration", "60", "--state-ring", "64", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs.all.append(host)
    with procs.watch() as r:
        daemon = procs.daemon(control, "d.log")
        wait_verdicts(r)
        daemon.send_signal(signal.SIGSTOP)
        try:
            r.set_index(1, 0x7FFF0000)  # the state consumer index
            deadline = time.monotonic() + 10
            while r.producer_up:
                assert time.monotonic() < deadline, "the host never saw the garbage"
                time.sleep(0.01)
        finally:
            daemon.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while not r.producer_up:
            assert time.monotonic() < deadline, "the host never re-attached"
            time.sleep(0.05)
        before = r.indices()[2]
        deadline = time.monotonic() + 10
        while r.indices()[2] == before:
            assert time.monotonic() < deadline, "no verdicts after the re-attach"
            time.sleep(0.05)
    host.send_signal(signal.SIGTERM)
    out, _ = host.communicate(timeout=20)
    rep = json.loads(out)
    assert rep["channel_errors"] == 1 and rep["channel_reattaches"] == 1
    assert "claimed it again" in procs.log("d.log")


def test_control_commands_while_the_loop_detaches_never_touch_an_unmapped_region(
        tmp_path: Path) -> None:
    """The loop unmaps the region when the data path leaves; a status, pause or params
    request arriving at that moment on the control thread once read the closed mapping
    through the C handle and killed the daemon with SIGSEGV (a CI run's `status` after
    aqm-host exited found no daemon). Both threads hammer it for a second."""
    region = Region.create(f"aqm-test-lcd-race-{os.getpid()}", 64, 64)
    try:
        cfg = load(None, {"channel": str(region.path), "metrics": "",
                          "control": f"ipc://{tmp_path}/c.sock"})
        server = Server(cfg, load_model(INTERIM_MODEL), Metrics(lambda: None))
        done, answered = threading.Event(), [0]

        def control() -> None:
            while not done.is_set():
                server.status()
                server.set_paused(answered[0] % 2 == 1)
                answered[0] += 1

        t = threading.Thread(target=control)
        t.start()
        cycles = 0
        try:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                server.region = server._attach()
                assert server.region is not None, server.channel_error
                server._detach()
                cycles += 1
        finally:
            done.set()
            t.join()
        assert cycles > 50 and answered[0] > 50, (cycles, answered[0])
    finally:
        region.close(unlink=True)
