"""aqmllmd's figures: throughput, state-to-verdict latency, on-time share, batching gain.

    .venv/bin/python bench/daemon_bench.py [--json]

1. Throughput on one core: recorded-like state batches through the whole serving path
   (features, the default model on one ONNX Runtime thread, action draw, verdict write)
   in this process, batched (1024) and one state at a time: states/s and the ratio.
2. Closed loop at 50k, 200k and 1M states/s offered: build/aqm-host --stress paced at
   that rate, about 1 ms of backlog, and the daemon's own serving loop (aqmllmd.server)
   in this process, observed per batch: p50/p99 from a packet's enqueue to its verdict
   being written, and the share of packets with a sojourn of at least 500 us that were
   decided by a verdict (from the host's decision log).
Not a test: figures go to bench/DAEMON.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.abi import IDX_VERDICT_CONS, STATE_DTYPE
from aqm_bridge.channel import ChannelError, Region
from aqmllmd import features
from aqmllmd.config import load as load_config
from aqmllmd.default_model import DEFAULT_MODEL
from aqmllmd.main import wake_on_time
from aqmllmd.metrics import Metrics
from aqmllmd.model import load as load_model
from aqmllmd.server import Server, choose_actions

HOST = REPO_ROOT / "build" / "aqm-host"


def synthetic_states(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros(n, STATE_DTYPE)
    s["seq"] = np.arange(n)
    s["ts_ns"] = np.arange(n) * 1000
    s["deadline_ns"] = s["ts_ns"] + rng.integers(0, 5_000_000, n)
    s["queue"] = rng.integers(0, 2, n)
    s["ecn"] = rng.integers(0, 4, n)
    s["len"] = rng.choice([64, 1500], n)
    s["backlog_pkts"] = rng.integers(0, 500, (n, 2))
    s["backlog_bytes"] = s["backlog_pkts"] * 1500
    s["sojourn_ns"] = rng.integers(0, 20_000_000, (n, 2))
    s["prob_base"] = rng.integers(0, 2**31, n)
    s["rate_bps"] = 12_500_000
    return s


def throughput(seconds: float = 3.0) -> dict[str, float]:
    model = load_model(DEFAULT_MODEL)
    rng = np.random.default_rng(0)
    states = synthetic_states(1 << 16)
    out: dict[str, float] = {}
    with Region.create(f"aqm-bench-{os.getpid()}", 64, 1 << 16) as region:
        for label, batch in (("batched_1024", 1024), ("one_at_a_time", 1)):
            hist = features.History()
            done, i, t0 = 0, 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                recs = states[i:i + batch]
                i = (i + batch) % (len(states) - batch)
                actions = choose_actions(model.run(features.compute(recs, hist)), "sample", rng)
                region.write_verdicts(recs["seq"], actions)
                region.set_index(IDX_VERDICT_CONS, region.indices()[2])  # a consumer
                done += batch
            out[f"{label}_states_per_s"] = done / (time.perf_counter() - t0)
    out["batching_gain"] = out["batched_1024_states_per_s"] / out["one_at_a_time_states_per_s"]
    return out


def closed_loop(rate: int, seconds: float) -> dict[str, float]:
    name = f"aqm-bench-{os.getpid()}-{rate}"
    backlog = max(8, rate // 1000)  # about 1 ms of queue
    npkts = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "decisions.bin")
        host = subprocess.Popen(
            [str(HOST), "--shm", name, "--stress", str(npkts), "--pps", str(rate),
             "--backlog", str(backlog), "--stress-log", str(log), "--wait-consumer", "10",
             "--json"], stdout=subprocess.PIPE, text=True)
        while not Path("/dev/shm", name).exists():
            time.sleep(0.005)
        cfg = load_config(None, {"channel": f"/dev/shm/{name}", "metrics": "",
                                 "control": f"ipc://{tmp}/ctl.sock", "seed": 1})
        server = Server(cfg, load_model(DEFAULT_MODEL), Metrics(lambda: None))
        lat: list[np.ndarray] = []
        server.on_batch = lambda recs, done: lat.append(done - recs["ts_ns"].astype(np.int64))
        loop = threading.Thread(target=server.run)
        loop.start()
        try:
            report = json.loads(host.communicate(timeout=seconds * 10 + 60)[0])
        finally:
            server.stop_event.set()
            loop.join()
        rec = np.fromfile(log, dtype=np.uint64).reshape(-1, 2)
    source = rec[:, 1] & 0xFF
    sojourn = rec[:, 1] >> 16
    slow = sojourn >= 500_000
    lat_us = np.concatenate(lat) / 1e3 if lat else np.array([np.nan])
    return {
        "offered_states_per_s": rate,
        "achieved_states_per_s": npkts / report["wall_s"],
        "p50_state_to_verdict_us": float(np.percentile(lat_us, 50)),
        "p99_state_to_verdict_us": float(np.percentile(lat_us, 99)),
        "mean_batch": float(np.mean([len(b) for b in lat])) if lat else 0.0,
        "packets_sojourn_ge_500us": int(slow.sum()),
        "on_time_share_sojourn_ge_500us": float((source[slow] == 1).mean()) if slow.any()
        else float("nan"),
        "model_share_all": report["model_share"],
        "states_lost": report["states_lost"],
        "verdicts_late": report["verdicts_late"],
    }


@click.command()
@click.option("--seconds", default=3.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(seconds: float, as_json: bool) -> None:
    if not HOST.is_file():
        raise click.ClickException("build/aqm-host missing: run `make`")
    wake_on_time()  # as aqmllmd does
    # The closed loop needs two idle cores (host and daemon): other load shows in it.
    results = {"load_average_1m_before": os.getloadavg()[0], "cpus": os.cpu_count(),
               "throughput": throughput(seconds),
               "closed_loop": [closed_loop(r, seconds) for r in (50_000, 200_000, 1_000_000)]}
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    t = results["throughput"]
    click.echo(f"{results['cpus']} CPUs, load average {results['load_average_1m_before']:.2f} "
               "before the run (the closed loop wants two idle cores)")
    click.echo(f"serving path, one core: {t['batched_1024_states_per_s']:,.0f} states/s batched "
               f"(1024), {t['one_at_a_time_states_per_s']:,.0f} one at a time "
               f"(x{t['batching_gain']:.0f})")
    for r in results["closed_loop"]:
        click.echo(
            f"{r['offered_states_per_s']:>9,} states/s offered ({r['achieved_states_per_s']:,.0f}"
            f" achieved): state-to-verdict p50 {r['p50_state_to_verdict_us']:.0f} us, p99 "
            f"{r['p99_state_to_verdict_us']:.0f} us (batches of {r['mean_batch']:.0f}); "
            f"on time for sojourn >= 500 us "
            f"{100 * r['on_time_share_sojourn_ge_500us']:.1f}% of "
            f"{r['packets_sojourn_ge_500us']}; lost states {r['states_lost']}")


if __name__ == "__main__":
    try:
        main()
    except ChannelError as e:
        raise SystemExit(f"channel: {e}") from e
