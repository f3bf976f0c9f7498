"""Run one scenario under one policy with the ns-3 runner (build/aqm-sim).

The `llm` policy runs the real aqmllmd as a separate process on the channel region the
simulated queue disc creates: simulated time waits for each packet's verdict, and a
verdict counts only if the packet stayed at least `inference_latency_us` in the queue
(0: every verdict counts, the model decides as if it were instantaneous).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aqm_bridge._ffi import REPO_ROOT

from .scenario import Scenario

RUNNER = REPO_ROOT / "build" / "aqm-sim"
_channel_ids = itertools.count()


class RunError(Exception):
    pass


def run(scenario: Scenario, policy: str, out_dir: Path | None = None,
        model: str | None = None, inference_latency_us: int = 0,
        record: Path | None = None, plots: bool = True) -> dict[str, Any]:
    """Metrics of one run (see sim/README.md).

    With out_dir: result.json, timeseries.csv, sojourns.bin and (plots) PNGs there.
    With record: the dataset rows of every departing packet (policy dualpi2 only).
    """
    if not RUNNER.is_file():
        raise RunError(f"{RUNNER} missing: `make` builds it when the ns3 wheel is installed "
                       "(pip install '.[sim]')")
    channel = f"aqm-sim-{os.getpid()}-{next(_channel_ids)}" if policy == "llm" else ""
    config = scenario.flat(policy, channel, inference_latency_us)
    if out_dir is not None:
        out_dir = out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        config += (f"timeseries {out_dir / 'timeseries.csv'}\n"
                   f"sojourns {out_dir / 'sojourns.bin'}\n")
    if record is not None:
        if policy not in ("dualpi2", "llm"):
            raise RunError(f"recording is for the core's policies (dualpi2, llm), not {policy}")
        config += f"record {Path(record).resolve()}\n"
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp, "scenario.txt"), Path(tmp, "result.json")
        cfg.write_text(config)
        sim = subprocess.Popen([str(RUNNER), str(cfg), str(out)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        daemon = _start_daemon(channel, model, tmp, sim) if channel else None
        try:
            _, err = sim.communicate(timeout=3600)
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(timeout=10)
            if channel:
                Path("/dev/shm", channel).unlink(missing_ok=True)
        if sim.returncode != 0:
            raise RunError(f"aqm-sim failed ({sim.returncode}): {err.strip()[-2000:]}")
        result = json.loads(out.read_text())
    result["scenario"] = scenario.name
    result.update(throughput_summary(result["flows"]))
    if policy == "llm":
        result["inference_latency_us"] = inference_latency_us
        result["model"] = model or "default"
    if out_dir is not None:
        (out_dir / "result.json").write_text(json.dumps(result, indent=2))
        (out_dir / "scenario.txt").write_text(config)
        if plots:
            from . import plots as p

            title = f"{scenario.name}: {policy}"
            p.sojourn_cdf(out_dir / "sojourns.bin", out_dir / "sojourn_cdf.png", title)
            p.timeseries(out_dir / "timeseries.csv", out_dir, title,
                         [f"{f.cc} {f.rtt_ms:g} ms" for f in scenario.flows])
    return result


def throughput_summary(flows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Aggregate throughput, and scalable (DCTCP) over classic throughput."""
    scalable = sum(f["throughput_mbps"] for f in flows if f["cc"] == "dctcp")
    classic = sum(f["throughput_mbps"] for f in flows if f["cc"] != "dctcp")
    n_s = sum(1 for f in flows if f["cc"] == "dctcp")
    n_c = len(flows) - n_s
    ratio = (scalable / n_s) / (classic / n_c) if n_s and n_c and classic > 0 else None
    return {"aggregate_mbps": scalable + classic, "scalable_classic_ratio": ratio}


def _start_daemon(channel: str, model: str | None, tmp: str,
                  sim: subprocess.Popen[str]) -> subprocess.Popen[bytes]:
    shm = Path("/dev/shm", channel)
    deadline = time.monotonic() + 30
    while not shm.exists():
        if sim.poll() is not None or time.monotonic() > deadline:
            raise RunError(f"aqm-sim never created its channel {shm}")
        time.sleep(0.01)
    cmd = [sys.executable, "-m", "aqmllmd.main", "--channel", str(shm), "--control",
           f"ipc://{tmp}/aqmllmd.sock", "--metrics", "", "--max-wait-us", "0", "--seed", "1"]
    if model:
        cmd += ["--model", model]
    return subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
