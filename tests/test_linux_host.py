"""The Linux host aqm-host: its loads, its region, its errors."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.channel import Region

HOST = REPO_ROOT / "build" / "aqm-host"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HOST), *args], capture_output=True, text=True, timeout=timeout)


def test_responsive_flows_get_l4s_isolation() -> None:
    r = run("--no-channel", "--duration", "2", "--rate-mbps", "20", "--rtt-ms", "10",
            "--l4s", "1", "--classic", "1", "--classic-ecn", "0", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    # Every accepted packet is decided, or still queued when the run ends.
    assert rep["decisions"] + sum(rep["queued_at_end"]) == sum(rep["pkts_in"])
    assert rep["pkts_in"][0] > 100 and rep["pkts_in"][1] > 100
    # The scalable flow's queue stays far below the classic one's.
    assert rep["sojourn_ms_l"]["p99"] < rep["sojourn_ms_c"]["p50"]
    assert rep["step_marks"] > 0 and rep["model_share"] == 0


def test_trace_replay_decides_every_packet(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("".join(f"{i * 50_000} {1500 if i % 3 else 64} {i % 4}\n"
                             for i in range(400)))
    r = run("--no-channel", "--trace", str(trace), "--rate-mbps", "50", "--duration", "10",
            "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert sum(rep["pkts_in"]) + sum(rep["drops_limit"]) == 400
    assert rep["decisions"] == sum(rep["pkts_in"])


@pytest.mark.parametrize(("line", "message"), [("10 0 1", "bad packet"),
                                               ("10 1500 7", "bad packet")])
def test_bad_trace_lines_are_refused(tmp_path: Path, line: str, message: str) -> None:
    trace = tmp_path / "bad.txt"
    trace.write_text(f"0 100 1\n{line}\n")
    r = run("--no-channel", "--trace", str(trace))
    assert r.returncode != 0 and message in r.stderr and "bad.txt:2" in r.stderr


def test_missing_trace_is_refused(tmp_path: Path) -> None:
    r = run("--no-channel", "--trace", str(tmp_path / "none"))
    assert r.returncode != 0 and "cannot open trace" in r.stderr


@pytest.mark.parametrize("args", [["--rate-mbps", "fast"], ["--duration", "-1"],
                                  ["--shm", "a/b"], ["--bogus"], ["extra"]])
def test_bad_arguments_are_refused(args: list[str]) -> None:
    r = run(*args)
    assert r.returncode == 2 and r.stderr


def test_region_is_private_and_removed_on_sigterm() -> None:
    name = f"aqm-test-host-{os.getpid()}"
    path = Path("/dev/shm", name)
    host = subprocess.Popen([str(HOST), "--shm", name, "--duration", "30", "--rate-mbps", "10"],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        time.sleep(0.3)
        with Region.open(path) as r:
            assert r.producer_up
            assert r.counters()["pi_updates"] > 0  # published at the host's 1 ms tick
        host.send_signal(signal.SIGTERM)
        out, _ = host.communicate(timeout=10)
    finally:
        if host.poll() is None:
            host.kill()
    assert host.returncode == 0 and "decisions" in out
    assert not path.exists()
