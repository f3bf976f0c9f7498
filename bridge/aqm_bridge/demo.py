"""The data path on a synthetic load, with and without the channel in the loop.

`python -m aqm_bridge.demo` runs the Linux host (build/aqm-host) twice on the same
synthetic load (responsive scalable and classic flows through a bottleneck, or with
--load an open-loop Poisson load at that fraction of the link rate):

1. DualPI2 alone, no channel;
2. the channel attached, with a consumer in this process that reads every state record
   and answers with a verdict.

The consumer here is a placeholder for aqmllmd (whose demo, `python -m aqmllmd.demo`, is
what `make run` runs): it
decides as DualPI2 would from what the record says (p_C for classic packets, p_CL for
L4S ones, and a step mark when the expected sojourn, deadline - timestamp, reaches the
step threshold). It shows the loop closing in real time, and how many verdicts arrive
before their packet leaves.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from ._ffi import REPO_ROOT
from .abi import ACT_ENQUEUE, ACT_MARK, QUEUE_L
from .channel import ChannelError, Region
from .core import PROB_ONE, default_params

HOST = REPO_ROOT / "build" / "aqm-host"
POLL_S = 20e-6


def mirror_dualpi2(states: np.ndarray, rng: np.random.Generator,
                   step_ns: int) -> np.ndarray:
    """DualPI2's decision from the state record alone (vectorised)."""
    roll = rng.random(len(states)) * PROB_ONE
    is_l = states["queue"] == QUEUE_L
    prob = np.where(is_l, states["prob_cl"], states["prob_c"])
    expected_sojourn = states["deadline_ns"].astype(np.int64) - states["ts_ns"].astype(np.int64)
    mark = (roll < prob) | (is_l & (expected_sojourn >= step_ns))
    return np.where(mark, ACT_MARK, ACT_ENQUEUE).astype(np.uint32)


def run_host(args: list[str], consumer: bool) -> dict[str, Any]:
    if not HOST.is_file():
        raise click.ClickException(f"{HOST} missing: run `make` first")
    name = f"aqm-demo-{os.getpid()}"
    cmd = [str(HOST), *args, "--json"]
    cmd += ["--shm", name, "--wait-consumer", "5"] if consumer else ["--no-channel"]
    host = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if consumer:
        _consume(Path("/dev/shm", name), host)
    out, _ = host.communicate(timeout=120)
    if host.returncode != 0:
        raise click.ClickException(f"aqm-host failed (exit {host.returncode})")
    return json.loads(out)


def _consume(path: Path, host: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            region = Region.open(path)
            break
        except ChannelError:
            if host.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    rng = np.random.default_rng(1)
    step_ns = default_params()["step_thresh_ns"]
    with region:
        region.consumer_up = True
        while host.poll() is None:
            states = region.read_states(4096)
            if len(states) == 0:
                time.sleep(POLL_S)
                continue
            region.write_verdicts(states["seq"], mirror_dualpi2(states, rng, step_ns))


def summarise(label: str, r: dict[str, Any]) -> list[str]:
    on_time = r["verdicts_applied"]
    sent = on_time + r["verdicts_late"]
    lines = [
        f"{label}",
        f"  delivered {r['delivered_mbps']:.1f} of {r['link_mbps']:.0f} Mbit/s, "
        f"{r['decisions']} packets decided, p' = {r['p_prime']:.4f}",
    ]
    for q, key in (("L", "l"), ("C", "c")):
        i = 1 if q == "L" else 0
        s = r[f"sojourn_ms_{key}"]
        lines.append(
            f"  {q} queue: sojourn p50 {s['p50']:.2f} ms, p99 {s['p99']:.2f} ms; "
            f"marks {r['marks_fallback'][i]} DualPI2 + {r['marks_model'][i]} verdict, "
            f"drops {r['drops_fallback'][i]} + {r['drops_model'][i]}")
    if sent:
        lines.append(
            f"  verdicts: {on_time} of {sent} arrived before their packet left "
            f"({100 * on_time / sent:.1f}%); {100 * r['model_share']:.1f}% of packets "
            f"decided by a verdict, the rest by DualPI2")
    return lines


def demo_options(fn: Callable[..., None]) -> Callable[..., None]:
    """The options every main-job demo takes."""
    for opt in reversed([
        click.option("--duration", default=5.0, show_default=True, help="seconds per run"),
        click.option("--rate-mbps", default=100.0, show_default=True, help="bottleneck rate"),
        click.option("--rtt-ms", default=20.0, show_default=True, help="base round-trip time"),
        click.option("--load", default=0.0, show_default=True,
                     help="open-loop Poisson load as a fraction of the link rate (ECN mix "
                          "0.5/0.25/0.25) instead of responsive flows; 0: flows"),
        click.option("--json", "as_json", is_flag=True, help="print both reports as JSON"),
    ]):
        fn = opt(fn)
    return fn


def compare(run: Callable[[list[str], bool], dict[str, Any]], looped_key: str,
            looped_label: str, duration: float, rate_mbps: float, rtt_ms: float,
            as_json: bool, load: float = 0.0) -> None:
    """Run the same load with DualPI2 alone, then with a consumer of the channel."""
    args = ["--duration", str(duration), "--rate-mbps", str(rate_mbps)]
    if load > 0:
        args += ["--load", str(load)]
        what = (f"open-loop Poisson load at {load:g} x the link, ECT(1)/ECT(0)/Not-ECT "
                "0.5/0.25/0.25")
    else:
        args += ["--rtt-ms", str(rtt_ms), "--l4s", "2", "--classic-ecn", "1",
                 "--classic", "1"]
        what = f"{rtt_ms:g} ms RTT, 2 scalable + 1 classic ECN + 1 classic flow"
    if not as_json:
        click.echo(f"Linux data path: {rate_mbps:g} Mbit/s bottleneck, {what}, "
                   f"{duration:g} s per run")
    alone = run(args, False)
    looped = run(args, True)
    if as_json:
        click.echo(json.dumps({"dualpi2": alone, looped_key: looped}, indent=2))
        return
    click.echo("\n".join(summarise("DualPI2 alone:", alone)))
    click.echo("\n".join(summarise(looped_label, looped)))


@click.command()
@demo_options
def main(**opts: Any) -> None:
    """Run the data path on a synthetic load, DualPI2 alone, then with the channel."""
    compare(run_host, "channel",
            "Channel in the loop (stand-in consumer mirroring DualPI2 from the records):",
            **opts)


if __name__ == "__main__":
    main()
