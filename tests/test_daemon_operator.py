"""What an operator (or a local attacker) can get wrong around the daemon: each gets one
clear line, and the daemon, its reload and its control socket stay usable.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from ports import free_port

from aqm_bridge.channel import Region
from aqmllmd.config import ConfigError, load
from aqmllmd.control import ControlPlane
from aqmllmd.ctl import Client, cli
from aqmllmd.default_model import INTERIM_MODEL
from aqmllmd.metrics import Metrics
from aqmllmd.model import load as load_model
from aqmllmd.server import Server

COUNTERS_GEN_OFF = 64 + 4 * 64 + 12  # AQM_CHAN_CTRL_OFF + offsetof(counters_gen)


def daemon(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aqmllmd.main", "--metrics", "", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess[str], match: str) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], r.stderr


class TestBadConfigurations:
    def test_non_utf8_file(self, tmp_path: Path) -> None:
        f = tmp_path / "c.toml"
        f.write_bytes(b'[daemon]\nlog = "std\xff\xfeerr"\n')
        one_line_error(daemon("-c", str(f), "--control", f"ipc://{tmp_path}/c.sock"),
                       "not UTF-8")

    def test_negative_seed(self, tmp_path: Path) -> None:
        one_line_error(daemon("--seed", "-1", "--control", f"ipc://{tmp_path}/c.sock"),
                       "seed=-1 out of range")

    def test_pidfile_in_a_missing_directory(self, tmp_path: Path) -> None:
        one_line_error(daemon("--pidfile", str(tmp_path / "no" / "p.pid"),
                              "--control", f"ipc://{tmp_path}/c.sock"), "does not exist")

    def test_ipc_path_in_a_missing_directory(self, tmp_path: Path) -> None:
        one_line_error(daemon("--control", f"ipc://{tmp_path}/no/c.sock"), "does not exist")

    def test_abstract_ipc_socket(self) -> None:
        one_line_error(daemon("--control", "ipc://@aqmllmd-test"), "abstract")

    def test_unresolvable_metrics_host_leaves_no_socket(self, tmp_path: Path) -> None:
        r = daemon("--control", f"ipc://{tmp_path}/c.sock", "--metrics",
                   "no-such-host.invalid:9464")
        one_line_error(r, "cannot resolve")
        assert not (tmp_path / "c.sock").exists()

    def test_metrics_port_in_use_leaves_no_socket(self, tmp_path: Path) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = daemon("--control", f"ipc://{tmp_path}/c.sock", "--metrics",
                       f"127.0.0.1:{port}", "--channel", str(tmp_path / "none"))
        one_line_error(r, "metrics")
        assert not (tmp_path / "c.sock").exists()

    def test_metrics_off_loopback_needs_the_opt_in(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="metrics.allow_remote"):
            load(None, {"metrics": "0.0.0.0:9464", "control": f"ipc://{tmp_path}/c.sock"})
        f = tmp_path / "m.toml"
        f.write_text(f'[metrics]\nlisten = "0.0.0.0:9464"\nallow_remote = true\n'
                     f'[control]\nendpoint = "ipc://{tmp_path}/c.sock"\n')
        assert load(f).metrics_allow_remote
        one_line_error(daemon("--control", f"ipc://{tmp_path}/c.sock", "--metrics",
                              f"0.0.0.0:{free_port()}"), "allow_remote")


def test_sighup_with_a_non_utf8_file_keeps_reloads_working(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    good = f'[control]\nendpoint = "ipc://{tmp_path}/c.sock"\n[metrics]\nlisten = ""\n' \
           f'[channel]\npath = "{tmp_path}/none"\n'
    conf.write_text(good)
    p = subprocess.Popen([sys.executable, "-m", "aqmllmd.main", "-c", str(conf)],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "c.sock").exists():
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.05)
        conf.write_bytes(good.encode() + b"# \xff\xfe\n")
        p.send_signal(signal.SIGHUP)
        time.sleep(3)
        conf.write_text(good)
        p.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert p.poll() is None
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert "reload refused" in err and "not UTF-8" in err
    assert "reloaded: model" in err  # the second SIGHUP still reloads


def test_raw_bytes_on_the_control_socket_lose_no_reply(plane) -> None:  # noqa: ANN001
    cp, client, _ = plane
    path = cp.endpoint[len("ipc://"):]
    rng = __import__("random").Random(7)
    for i in range(40):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(path)
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        if i % 4 == 0:  # a valid ZMTP greeting's first byte, then garbage
            payload = b"\xff" + payload
        raw.sendall(payload)
        if i % 2:
            raw.close()  # half of them hang up at once, half stay connected
        else:
            time.sleep(0.01)
        assert client.call("status")["model"]["version"] == "interim-dualpi2-fit-1", i
        if not i % 2:
            raw.close()


def test_params_set_out_of_range_is_one_line(plane) -> None:  # noqa: ANN001
    cp, _, _ = plane
    r = CliRunner().invoke(cli, ["-e", cp.endpoint, "params", "set",
                                 "target_ns=99999999999999999999"])
    assert r.exit_code == 2 and "fit 32 bits" in r.output and r.exception is not None
    assert not isinstance(r.exception, OverflowError)
    r = CliRunner().invoke(cli, ["-e", cp.endpoint, "params", "set", "target_ns=-5"])
    assert r.exit_code == 2 and "NAME=INTEGER" in r.output


def test_new_params_reach_the_data_path(plane, tmp_path: Path) -> None:  # noqa: ANN001
    """ABI v2's parameters pass through `aqmllmctl params` by name, to a real core
    answering the mailbox at its ticks."""
    import threading

    from aqm_bridge.core import PARAM_NAMES, Core

    cp, client, server = plane
    region = Region.create(f"aqm-test-params-{os.getpid()}", 64, 64)
    core = Core(seed=1)
    core.attach(region)
    stop = threading.Event()

    def data_path() -> None:
        t = 0
        while not stop.is_set():
            t += 1000
            core.tick(t)
            time.sleep(0.0005)

    thread = threading.Thread(target=data_path)
    thread.start()
    try:
        server.region = region
        got = client.call("params_get")
        assert set(got) == set(PARAM_NAMES)
        r = CliRunner().invoke(cli, ["-e", cp.endpoint, "params", "set",
                                     "harm_budget_pct=150", "step_thresh_pkts=4",
                                     "min_qlen_step=2"])
        assert r.exit_code == 0, r.output
        now = client.call("params_get")
        assert (now["harm_budget_pct"], now["step_thresh_pkts"], now["min_qlen_step"]) == \
            (150, 4, 2)
        r = CliRunner().invoke(cli, ["-e", cp.endpoint, "params", "set",
                                     "harm_budget_pct=5000"])
        assert r.exit_code == 1 and "refused" in r.output
    finally:
        stop.set()
        thread.join()
        server.region = None
        region.close(unlink=True)


def test_counters_held_odd_do_not_break_status(plane) -> None:  # noqa: ANN001
    _, client, server = plane
    region = Region.create(f"aqm-test-odd-{os.getpid()}", 64, 64)
    try:
        region._mm[COUNTERS_GEN_OFF:COUNTERS_GEN_OFF + 4] = struct.pack("<I", 7)
        server.region = region
        status = client.call("status")
        assert status["verdict_guard"] is None and "never stable" in status["channel_error"]
        reply = client.raw(__import__("msgpack").packb({"cmd": "params_get"}))
        assert not reply["ok"] and "never stable" in reply["error"]
    finally:
        server.region = None
        region.close(unlink=True)


@pytest.mark.parametrize(("garbage", "reason"), [
    (b"\x00" * 8192, "magic"),
    (struct.pack("<II", 0x4C4D5141, 99) + b"\x00" * 8184, "ABI"),
])
def test_a_foreign_region_is_refused_with_its_reason(tmp_path: Path, garbage: bytes,
                                                     reason: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = Path("/dev/shm", f"aqm-test-foreign-{os.getpid()}")
    path.write_bytes(garbage)
    os.chmod(path, 0o600)
    try:
        cfg = load(None, {"channel": str(path), "metrics": "",
                          "control": f"ipc://{tmp_path}/c.sock"})
        server = Server(cfg, load_model(INTERIM_MODEL), Metrics(lambda: None))
        with caplog.at_level(logging.INFO, logger="aqmllmd"):
            assert server._attach() is None
            assert server._attach() is None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and reason.lower() in warnings[0].getMessage().lower()
        assert reason.lower() in server.status()["channel_error"].lower()
    finally:
        path.unlink(missing_ok=True)


def test_a_slow_model_does_not_hold_the_control_plane(tmp_path: Path) -> None:
    """set_model validates on a worker, killed after validate_timeout_s; status, pause
    and the rest are answered meanwhile, and a second validation is refused."""
    import threading

    import msgpack

    from aqmllmd import hostile

    endpoint = f"ipc://{tmp_path}/ctl.sock"
    cfg = load(None, {"channel": str(tmp_path / "none"), "control": endpoint, "metrics": "",
                      "validate_timeout_s": 8})
    server = Server(cfg, load_model(INTERIM_MODEL), Metrics(lambda: None))
    cp = ControlPlane(server, endpoint)
    cp.start()
    slow = hostile.write("slow", tmp_path / "slow.onnx")
    result: dict = {}

    def set_slow() -> None:
        c = Client(endpoint, timeout_ms=60_000)
        try:
            result.update(c.raw(msgpack.packb({"cmd": "set_model",
                                               "args": {"path": str(slow)}})))
        finally:
            c.close()

    t = threading.Thread(target=set_slow)
    t.start()
    client = Client(endpoint, timeout_ms=3000)
    try:
        time.sleep(1)
        assert client.call("status")["model"]["version"] == "interim-dualpi2-fit-1"
        assert client.call("pause")["paused"]
        reply = client.raw(msgpack.packb({"cmd": "set_model", "args": {"path": str(slow)}}))
        assert not reply["ok"] and "being validated" in reply["error"]
        t.join(timeout=60)
        assert not result["ok"] and "did not finish in 8 s" in result["error"]
        assert client.call("status")["model"]["version"] == "interim-dualpi2-fit-1"
    finally:
        server.stop_event.set()
        client.close()
        cp.stop()


def test_status_says_which_data_path_is_served(plane) -> None:  # noqa: ANN001
    """The header's generations on any system; FreeBSD's AQMLLM_INFO parsed as the
    module lays it out (kmod/freebsd/aqm_llm_ioctl.h)."""
    from aqmllmd.server import parse_info

    _, client, server = plane
    region = Region.create(f"aqm-test-gen-{os.getpid()}", 64, 64)
    try:
        region._mm[56:64] = struct.pack("<2I", 3, 1)
        server.region = region
        assert client.call("status")["data_path"] == {"producer_gen": 3, "consumer_gen": 1}
    finally:
        server.region = None
        region.close(unlink=True)
    raw = struct.pack("<4IQiI2Q2IQ", 2, 4096, 4096, 2, 1 << 20, 1, 1, 7,
                      5_000_000_000, 4, 1, 0)
    assert parse_info(raw, 7_500_000_000) == {"scheduler": 1, "instance": 7,
                                              "reattached_s_ago": 2.5, "reattaches": 4}
    idle = struct.pack("<4IQiI2Q2IQ", 2, 4096, 4096, 0, 1 << 20, -1, 0, 0, 0, 0, 0, 0)
    assert parse_info(idle, 1) == {"scheduler": None, "instance": None,
                                   "reattached_s_ago": None, "reattaches": 0}


@pytest.mark.parametrize(("args", "message"), [
    (["-e", "garbage", "status"], "want ipc://PATH"),
    (["--timeout", "-1", "status"], "not in the range"),
    (["watch", "--interval", "-1"], "not in the range"),
    (["watch", "--count", "-1"], "not in the range"),
])
def test_aqmllmctl_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    r = CliRunner().invoke(cli, args)
    assert r.exit_code in (1, 2) and message in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_aqmllmctl_watch_at_interval_zero(plane) -> None:  # noqa: ANN001
    cp, _, _ = plane
    r = CliRunner().invoke(cli, ["-e", cp.endpoint, "watch", "--count", "3",
                                 "--interval", "0"])
    assert r.exit_code == 0, r.output
    assert r.output.count("states/s") == 2


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "huge"])
def test_a_configuration_that_is_not_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "c.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="not a regular file|over|Is a directory"):
        load(path)
