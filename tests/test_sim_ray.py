"""`aqmllm-sim sweep --ray`: the same sweep on a local Ray head as on local processes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from ports import free_port

from aqmllm_sim.cli import cli

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ns3") is None,
                       reason="the ns3 wheel (sim extra) is not installed"),
]

BIN = Path(sys.executable).parent
NEEDS_RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="the ray extra is not installed (pip install -e '.[ray]'; scripts/setup.sh does)")


def _scenarios(where: Path) -> list[Path]:
    """Two tiny scenarios, each under two seeds: one simulated second each."""
    paths = []
    for name, rate in (("tiny-10m", 10), ("tiny-5m", 5)):
        for seed in (1, 2):
            p = where / f"{name}-s{seed}.toml"
            p.write_text(f'name = "{name}-s{seed}"\nrate_mbps = {rate}\nduration_s = 1\n'
                         f'seed = {seed}\n[[flows]]\ncc = "dctcp"\n[[flows]]\ncc = "cubic"\n')
            paths.append(p)
    return paths


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A Ray head on this machine, in its own session; ended (it and all it started) after."""
    port = free_port()
    # Unix socket paths must stay short: not under pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="aqmray", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(Path(temp) / "head.log", "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
         "--disable-usage-stats", "--object-store-memory", str(100 * 1024 * 1024),
         "--temp-dir", temp],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "--block" not in (Path(temp) / "head.log").read_text():
            assert head.poll() is None, (Path(temp) / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        # SIGTERM to `ray start --block` drains the node and ends what it started;
        # anything of its session left after that is killed.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(args: list[str], cwd: Path) -> list[dict]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([str(BIN / "aqmllm-sim"), "sweep", *args, "--json"], cwd=cwd,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@NEEDS_RAY
def test_a_sweep_on_a_ray_head_gives_what_local_processes_give(
        ray_head: str, tmp_path: Path) -> None:
    files = [str(p) for p in _scenarios(tmp_path)]
    on_ray = _sweep([*files, "--ray", ray_head], tmp_path)
    local = _sweep([*files, "--jobs", "2"], tmp_path)
    assert [(r["scenario"], r["policy"]) for r in on_ray] == [
        (f"{name}-s{seed}", policy) for name in ("tiny-10m", "tiny-5m") for seed in (1, 2)
        for policy in ("dualpi2", "fifo")]
    assert on_ray == local
    # The seeds are not a no-op: each gives its own run.
    by = {(r["scenario"], r["policy"]): r for r in on_ray}
    assert by[("tiny-10m-s1", "dualpi2")] != by[("tiny-10m-s2", "dualpi2")]
    assert all(r["flows"][0]["received_bytes"] > 0 for r in on_ray)


def test_ray_absent_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    scenario = _scenarios(tmp_path)[0]
    r = CliRunner().invoke(cli, ["sweep", str(scenario), "--ray", "127.0.0.1:1"])
    assert r.exit_code == 1, r.output  # a ClickException, not a traceback
    assert "--ray needs the ray package: pip install -e '.[ray]'" in r.output
