"""End to end on Linux: aqm-host and aqmllmd as separate processes.

Killing or stopping the daemon mid-stream never blocks the data path: every packet is
still decided, DualPI2 takes over within a deadline, and verdicts resume after a
restart or SIGCONT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from host_reports import every_packet_decided

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.channel import ChannelError, Region

HOST = REPO_ROOT / "build" / "aqm-host"


class Rig:
    def __init__(self, tmp: Path, duration: float) -> None:
        self.name = f"aqm-test-e2e-{os.getpid()}-{int(time.monotonic() * 1e6) % 10**6}"
        self.shm = Path("/dev/shm", self.name)
        self.control = f"ipc://{tmp}/ctl.sock"
        self.host = subprocess.Popen(
            [str(HOST), "--shm", self.name, "--duration", str(duration), "--rate-mbps", "50",
             "--rtt-ms", "20", "--json"], stdout=subprocess.PIPE, text=True)
        self.daemon: subprocess.Popen[bytes] | None = None
        deadline = time.monotonic() + 10
        while True:
            try:
                self.watch = Region.open(self.shm)  # a second reader, for counters only
                break
            except ChannelError:
                assert time.monotonic() < deadline, "host never laid out its region"
                time.sleep(0.01)

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "aqmllmd.main", "--channel", str(self.shm),
             "--control", self.control, "--metrics", "", "--seed", "1"],
            stderr=subprocess.DEVNULL)

    def counters(self) -> dict:
        return self.watch.counters()

    def wait_model_decisions(self, more_than: int, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.counters()
            if c["decisions_model"] > more_than:
                return c
            time.sleep(0.05)
        pytest.fail(f"no model decisions beyond {more_than} within {timeout} s")

    def finish(self) -> dict:
        out, _ = self.host.communicate(timeout=60)
        assert self.host.returncode == 0
        return json.loads(out)

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in (self.daemon, self.host):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self.watch.close()
        self.shm.unlink(missing_ok=True)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Rig(tmp_path, duration=6) as r:
        yield r


def test_daemon_decides_in_closed_loop(rig: Rig) -> None:
    rig.start_daemon()
    report = rig.finish()
    every_packet_decided(report)
    assert report["decisions_model"] > 0.2 * report["decisions"]
    assert report["verdicts_applied"] > 20 * report["verdicts_late"]
    assert report["delivered_mbps"] > 35


def test_sigkill_falls_back_then_a_restart_resumes(rig: Rig) -> None:
    rig.start_daemon()
    rig.wait_model_decisions(1000)
    assert rig.daemon is not None
    rig.daemon.send_signal(signal.SIGKILL)
    rig.daemon.wait()
    time.sleep(0.1)  # longer than any deadline at 50 Mbit/s with this backlog
    before = rig.counters()
    time.sleep(0.5)
    after = rig.counters()
    assert after["decisions_model"] == before["decisions_model"], "no verdicts once dead"
    assert after["decisions_fallback"] > before["decisions_fallback"] + 100
    rig.start_daemon()
    rig.wait_model_decisions(after["decisions_model"] + 500)
    every_packet_decided(rig.finish())


def test_sigstop_falls_back_and_sigcont_resumes(rig: Rig) -> None:
    rig.start_daemon()
    rig.wait_model_decisions(1000)
    assert rig.daemon is not None
    rig.daemon.send_signal(signal.SIGSTOP)
    time.sleep(0.1)
    before = rig.counters()
    time.sleep(0.5)
    after = rig.counters()
    assert after["decisions_model"] == before["decisions_model"]
    assert after["decisions_fallback"] > before["decisions_fallback"] + 100
    rig.daemon.send_signal(signal.SIGCONT)
    rig.wait_model_decisions(after["decisions_model"] + 500)
    every_packet_decided(rig.finish())


def test_sigterm_stops_cleanly_and_clears_the_consumer_flag(rig: Rig) -> None:
    rig.start_daemon()
    rig.wait_model_decisions(100)
    assert rig.daemon is not None and rig.watch.consumer_up
    rig.daemon.send_signal(signal.SIGTERM)
    assert rig.daemon.wait(timeout=10) == 0
    assert not rig.watch.consumer_up
    every_packet_decided(rig.finish())


@pytest.fixture
def long_rig(tmp_path: Path) -> Iterator[Rig]:
    """Long enough for two validations (each in a child process) on a busy machine."""
    with Rig(tmp_path, duration=15) as r:
        yield r


def test_reload_and_model_swap_on_a_live_daemon(long_rig: Rig) -> None:
    rig = long_rig
    from aqmllmd.ctl import Client
    from aqmllmd.default_model import DEFAULT_MODEL, INTERIM_MODEL
    from aqmllmd.model import load

    default = load(DEFAULT_MODEL).version
    rig.start_daemon()
    rig.wait_model_decisions(100)
    client = Client(rig.control, timeout_ms=5000)
    try:
        assert client.call("reload")["model"] == default
        status = client.call("status")
        # The trained default is made for the dualpi2 guard and says so.
        assert status["model"]["verdict_guard"] == "dualpi2" == status["verdict_guard"]
        assert client.call("set_model", path=str(INTERIM_MODEL))["new"]
        before = rig.counters()["decisions_model"]
        rig.wait_model_decisions(before + 200)  # serving went on through both swaps
        # The serving loop took the interim model at a batch boundary. It names no
        # guard; the data path runs the core's default.
        status = client.call("status")
        assert status["model"]["version"] == load(INTERIM_MODEL).version
        assert status["model"]["verdict_guard"] is None and status["verdict_guard"] == "dualpi2"
        assert rig.daemon is not None
        rig.daemon.send_signal(signal.SIGHUP)
        rig.wait_model_decisions(before + 400)
        # SIGHUP re-reads the configuration: back to the configured (default) model,
        # once the reload thread has validated it (in a child process) and the loop has
        # taken it at a batch boundary.
        deadline = time.monotonic() + 30
        while (status := client.call("status"))["model"]["version"] != default:
            assert time.monotonic() < deadline, "SIGHUP never brought the default back"
            time.sleep(0.1)
        assert status["previous_model"] == load(INTERIM_MODEL).version
    finally:
        client.close()
    every_packet_decided(rig.finish())


def test_idle_daemon_does_not_burn_a_core(tmp_path: Path) -> None:
    """Attached to a channel with nothing in it, it sleeps between polls."""
    region = Region.create(f"aqm-test-idle-{os.getpid()}", 64, 64)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aqmllmd.main", "--channel", str(region.path),
         "--control", f"ipc://{tmp_path}/ctl.sock", "--metrics", ""],
        stderr=subprocess.DEVNULL)

    def cpu_s() -> float:
        fields = Path(f"/proc/{daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        deadline = time.monotonic() + 20
        while not region.consumer_up:
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.02)
        time.sleep(0.3)  # past the spin of the first poll
        c0, t0 = cpu_s(), time.monotonic()
        time.sleep(2)
        share = (cpu_s() - c0) / (time.monotonic() - t0)
        assert share < 0.2, f"idle daemon used {share:.0%} of a core"
    finally:
        daemon.kill()
        daemon.wait()
        region.close(unlink=True)


def hostile_models(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Model files a daemon must refuse, each with the words its refusal must contain."""
    import numpy as np
    import onnx
    from onnx import helper

    from aqmllmd.default_model import STUDENT_MODEL
    from aqmllmd.default_model.build import to_onnx
    from aqmllmd.features import N_FEATURES

    def params(n_in: int = N_FEATURES) -> dict:
        rng = np.random.default_rng(0)
        return {"mean": np.zeros(n_in), "std": np.ones(n_in),
                "w1": rng.normal(size=(n_in, 8)), "b1": np.zeros(8),
                "w2": rng.normal(size=(8, 3)), "b2": np.zeros(3)}

    def save(model: onnx.ModelProto, name: str, mode: int = 0o644) -> Path:
        path = tmp / name
        onnx.save(model, path)
        os.chmod(path, mode)
        return path

    narrow = to_onnx(params(N_FEATURES - 1), "narrow")
    narrow.graph.input[0].type.tensor_type.shape.dim[1].dim_value = N_FEATURES - 1
    nan = to_onnx(params(), "nan")
    for init in nan.graph.initializer:
        if init.name == "b2":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array([np.nan, 0, 0], np.float32),
                                                       "b2"))
    custom = to_onnx(params(), "custom")
    custom.graph.node.append(helper.make_node("Exfiltrate", ["probs"], ["x"],
                                              domain="com.evil"))
    custom.opset_import.append(helper.make_opsetid("com.evil", 1))
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(STUDENT_MODEL.read_bytes()[:2000])
    os.chmod(truncated, 0o644)
    guard = to_onnx(params(), "guard")
    onnx.helper.set_model_props(guard, {**{p.key: p.value for p in guard.metadata_props},
                                        "aqmllm.verdict_guard": "all-of-them"})
    stranger = save(to_onnx(params(), "stranger"), "stranger.onnx")
    os.chown(stranger, 12345, 12345)  # neither root nor the daemon's user
    return {
        "wrong shape": (save(narrow, "narrow.onnx"), "input shape"),
        "NaN output": (save(nan, "nan.onnx"), "NaN"),
        "custom operator": (save(custom, "custom.onnx"), "custom operator"),
        "truncated": (truncated, "not a readable ONNX model|invalid"),
        "unknown verdict guard": (save(guard, "guard.onnx"), "verdict guard 'all-of-them'"),
        "world-writable": (save(to_onnx(params(), "ww"), "ww.onnx", 0o666),
                           "writable by group or others"),
        "another owner": (stranger, "owned by uid 12345"),
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_hostile_models_and_requests_on_a_live_daemon(rig: Rig, tmp_path: Path) -> None:
    """Each refused with a message naming what is wrong; the running model keeps
    serving throughout, without a single failed batch."""
    import re

    import msgpack

    from aqmllmd.ctl import Client
    from aqmllmd.default_model import DEFAULT_MODEL
    from aqmllmd.model import load

    models = hostile_models(tmp_path)
    rig.start_daemon()
    served = rig.wait_model_decisions(200)["decisions_model"]
    client = Client(rig.control, timeout_ms=5000)
    try:
        for what, (path, message) in models.items():
            reply = client.raw(msgpack.packb({"cmd": "set_model", "args": {"path": str(path)}}))
            assert not reply["ok"] and re.search(message, reply["error"]), (what, reply)
        for frame in (os.urandom(256), msgpack.packb({"cmd": "set_model", "args": [1]}),
                      msgpack.packb({"cmd": "x", "args": {"y": "z" * 100_000}})):
            assert not client.raw(frame)["ok"]
        status = client.call("status")
        assert status["model"]["version"] == load(DEFAULT_MODEL).version
        assert status["previous_model"] is None
        # No batch failed for the model's sake; a batch may have run over max_infer_us
        # ("slow") while the validators' children took the CPU of a loaded 2-core machine.
        failures = status["model_failures_by_reason"]
        assert sum(v for k, v in failures.items() if k != "slow") == 0, failures
        rig.wait_model_decisions(served + 300)  # and it went on serving
    finally:
        client.close()
    every_packet_decided(rig.finish())
