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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aqm_bridge._ffi import REPO_ROOT

from .scenario import Scenario

RUNNER = REPO_ROOT / "build" / "aqm-sim"
_channel_ids = itertools.count()


#: The llm policy's model unless told otherwise: the AQM-LLM student that aqmllmd ships
#: (not its packaged default, which decides nothing beyond DualPI2). A path, not an
#: import: sim/ depends on aqm_bridge only (tests/test_imports.py).
STUDENT_MODEL = REPO_ROOT / "daemon" / "aqmllmd" / "default_model" / "student.onnx"
#: Who decides in the core's place when recording (sim/ns3/behaviour-policy.h).
BEHAVIOURS = ("dualpi2", "pie", "explore")


class RunError(Exception):
    pass


def run(scenario: Scenario, policy: str, out_dir: Path | None = None,
        model: str | None = None, inference_latency_us: int = 0,
        record: Path | None = None, plots: bool = True,
        progress: Callable[[float], None] | None = None,
        behaviour: str = "dualpi2", explore_rate: float = 0.02) -> dict[str, Any]:
    """Metrics of one run (see sim/README.md).

    With out_dir: result.json, timeseries.csv, sojourns.bin and (plots) PNGs there.
    With record: the dataset rows of every departing packet (policies dualpi2 and llm).
    With progress: called with the simulated time reached, about 100 times a run.
    With behaviour (policy dualpi2 only): who decides in the core's place, for recording
    varied behaviour (sim/ns3/behaviour-policy.h): "pie" or "explore" (DualPI2 with a
    share explore_rate of packets decided at random).
    """
    if policy == "llm" and model is None:
        # The model of the project's evaluations, not aqmllmd's packaged default (which
        # decides nothing beyond DualPI2: aqmllmd/default_model/__init__.py).
        model = str(STUDENT_MODEL)
    if not RUNNER.is_file():
        raise RunError(f"{RUNNER} missing: `make` builds it when the ns3 wheel is installed "
                       "(pip install '.[sim]')")
    channel = f"aqm-sim-{os.getpid()}-{next(_channel_ids)}" if policy == "llm" else ""
    config = scenario.flat(policy, channel, inference_latency_us)
    if behaviour not in BEHAVIOURS:
        raise RunError(f"behaviour {behaviour!r}: want one of {', '.join(BEHAVIOURS)}")
    if behaviour != "dualpi2":
        if policy != "dualpi2":
            raise RunError(f"behaviour {behaviour} runs in the core's place: policy dualpi2 only")
        if not 0 <= explore_rate <= 1:
            raise RunError(f"explore rate {explore_rate} is outside [0, 1]")
        config += f"behaviour {behaviour}\nexplore_rate {explore_rate}\n"
    if out_dir is not None:
        out_dir = out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        config += (f"timeseries {out_dir / 'timeseries.csv'}\n"
                   f"sojourns {out_dir / 'sojourns.bin'}\n")
    if record is not None:
        if policy not in ("dualpi2", "llm"):
            raise RunError(f"recording is for the core's policies (dualpi2, llm), not {policy}")
        config += f"record {Path(record).resolve()}\n"
    if progress is not None:
        config += f"progress_s {scenario.duration_s / 100:g}\n"
    with tempfile.TemporaryDirectory() as tmp:
        cfg, out = Path(tmp, "scenario.txt"), Path(tmp, "result.json")
        cfg.write_text(config)
        with open(Path(tmp, "stderr"), "w+") as err:
            sim = subprocess.Popen([str(RUNNER), str(cfg), str(out)], stdout=subprocess.PIPE,
                                   stderr=err, text=True)
            daemon = None
            try:
                daemon = _start_daemon(channel, model, tmp, sim) if channel else None
                assert sim.stdout is not None
                for line in sim.stdout:
                    if progress is not None and line.startswith("progress "):
                        progress(float(line.split()[1]))
                sim.wait()
            finally:
                if sim.poll() is None:
                    sim.kill()
                    sim.wait()
                if daemon is not None:
                    daemon.terminate()
                    daemon.wait(timeout=10)
                if channel:
                    Path("/dev/shm", channel).unlink(missing_ok=True)
            err.seek(0)
            if sim.returncode != 0:
                raise RunError(f"aqm-sim failed ({sim.returncode}): {err.read().strip()[-2000:]}")
        result = json.loads(out.read_text())
    if progress is not None:
        progress(scenario.duration_s)
    result["scenario"] = scenario.name
    result["policy"] = policy  # dualpi2-default runs as dualpi2 in the runner
    result.update(throughput_summary(result["flows"], scenario.duration_s))
    if policy == "llm":
        result["inference_latency_us"] = inference_latency_us
        result["model"] = model
    if out_dir is not None:
        (out_dir / "result.json").write_text(json.dumps(result, indent=2))
        (out_dir / "scenario.txt").write_text(config)
        if plots:
            from . import plots as p

            title = f"{scenario.name}: {policy}"
            p.sojourn_cdf(out_dir / "sojourns.bin", out_dir / "sojourn_cdf.png", title)
            p.timeseries(out_dir / "timeseries.csv", out_dir, title,
                         [f"{f.cc} {f.rtt_ms:g} ms" for f in scenario.flows],
                         bulk=[not f.bytes for f in scenario.flows])
    return result


def throughput_summary(flows: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """Aggregate throughput; scalable (DCTCP) over classic per-flow throughput of the bulk
    flows; completion times of the finite (short) flows per congestion control."""
    bulk = [f for f in flows if "bytes" not in f]
    scalable = [f["throughput_mbps"] for f in bulk if f["cc"] == "dctcp"]
    classic = [f["throughput_mbps"] for f in bulk if f["cc"] != "dctcp"]
    ratio = None
    if scalable and classic and sum(classic) > 0:
        ratio = (sum(scalable) / len(scalable)) / (sum(classic) / len(classic))
    out: dict[str, Any] = {
        "aggregate_mbps": sum(f["received_bytes"] for f in flows) * 8 / 1e6 / duration_s,
        "bulk_mbps": sum(scalable) + sum(classic),
        "scalable_classic_ratio": ratio,
    }
    short = [f for f in flows if "bytes" in f]
    if short:
        fct: dict[str, Any] = {}
        for cc in sorted({f["cc"] for f in short}):
            done = sorted(f["fct_ms"] for f in short if f["cc"] == cc and f["fct_ms"] is not None)
            n = sum(1 for f in short if f["cc"] == cc)
            fct[cc] = {"flows": n, "completed": len(done),
                       "p50_ms": _pct(done, 50), "p99_ms": _pct(done, 99)}
        out["short_flows"] = fct
    return out


def _pct(v: list[float], pct: float) -> float | None:
    if not v:
        return None
    return v[min(len(v) - 1, int(pct / 100 * (len(v) - 1) + 0.5))]


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
