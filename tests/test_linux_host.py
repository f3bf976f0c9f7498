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


@pytest.mark.parametrize("arrivals", [["--arrivals", "poisson"],
                                      ["--arrivals", "onoff", "--on-ms", "5", "--off-ms", "5"]])
def test_open_loop_overload_saturates_the_link_with_the_asked_mix(arrivals: list[str]) -> None:
    r = run("--no-channel", "--load", "1.1", "--rate-mbps", "20", "--duration", "2",
            "--mix", "0.6,0.2,0.2", "--seed", "3", *arrivals, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert 1.0 < rep["offered_mbps"] / rep["link_mbps"] < 1.25
    assert rep["delivered_mbps"] > 0.9 * rep["link_mbps"]
    offered = [a + b for a, b in zip(rep["pkts_in"], rep["drops_limit"], strict=True)]
    assert 0.5 < offered[1] / sum(offered) < 0.7  # ECT(1) share goes to L
    # Unresponsive traffic at 110 %: DualPI2 has to drop classic packets.
    assert rep["drops_fallback"][0] > 0 and rep["p_prime"] > 0.05
    assert rep["decisions"] + sum(rep["queued_at_end"]) == sum(rep["pkts_in"])
    assert rep["fallback_share"] == 1.0 and rep["model_share"] == 0


def test_open_loop_light_load_keeps_queues_short() -> None:
    r = run("--no-channel", "--load", "0.5", "--rate-mbps", "20", "--duration", "2",
            "--mix", "1,1,1", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert 0.4 < rep["offered_mbps"] / rep["link_mbps"] < 0.6
    assert rep["delivered_mbps"] == pytest.approx(rep["offered_mbps"], rel=0.05)
    assert sum(rep["drops_fallback"]) + sum(rep["drops_limit"]) == 0
    assert rep["sojourn_ms_c"]["p50"] < 2 and rep["sojourn_ms_l"]["p50"] < 2


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
                                  ["--shm", "a/b"], ["--bogus"], ["extra"],
                                  ["--load", "0"], ["--arrivals", "burst"],
                                  ["--mix", "1,1"], ["--mix", "0,0,0"], ["--mix", "1,-1,1"],
                                  ["--load", "1", "--stress", "10"]])
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


@pytest.mark.parametrize("load", ["0", "1.1"])
def test_demo_runs_both_ways_through_the_channel(load: str) -> None:
    from click.testing import CliRunner

    from aqm_bridge.demo import main

    r = CliRunner().invoke(main, ["--duration", "1", "--rate-mbps", "20", "--load", load,
                                  "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    alone, looped = rep["dualpi2"], rep["channel"]
    assert alone["model_share"] == 0 and alone["states_published"] == 0
    assert looped["states_published"] > 0 and looped["verdicts_applied"] > 0
    assert looped["verdicts_bad"] == 0 and looped["channel_errors"] == 0
    assert looped["decisions_model"] + looped["decisions_fallback"] == looped["decisions"]
