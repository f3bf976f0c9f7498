"""The main job: the Linux data path and aqmllmd in closed loop, next to DualPI2 alone.

`python -m aqmllmd.demo` (what `make run` runs) starts build/aqm-host on a responsive
synthetic load (scalable and classic flows through a bottleneck) twice:

1. DualPI2 alone, no channel;
2. the channel attached and aqmllmd serving the embedded default model as a separate
   process, exactly as on a router.

It prints, for each, throughput, per-queue sojourn and marks/drops by decision source,
and for the second the share of packets that got a model verdict on time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from aqm_bridge.demo import HOST, summarise


def run_host(args: list[str], with_daemon: bool) -> dict[str, Any]:
    if not HOST.is_file():
        raise click.ClickException(f"{HOST} missing: run `make` first")
    if not with_daemon:
        out = subprocess.run([str(HOST), *args, "--no-channel", "--json"], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)
    name = f"aqm-demo-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        host = subprocess.Popen([str(HOST), *args, "--shm", name, "--wait-consumer", "10",
                                 "--json"], stdout=subprocess.PIPE, text=True)
        while not Path("/dev/shm", name).exists() and host.poll() is None:
            time.sleep(0.01)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "aqmllmd.main", "--channel", f"/dev/shm/{name}",
             "--control", f"ipc://{tmp}/ctl.sock", "--metrics", ""],
            stderr=subprocess.DEVNULL)
        try:
            out, _ = host.communicate(timeout=300)
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
    if host.returncode != 0:
        raise click.ClickException(f"aqm-host failed (exit {host.returncode})")
    return json.loads(out)


@click.command()
@click.option("--duration", default=8.0, show_default=True, help="seconds per run")
@click.option("--rate-mbps", default=100.0, show_default=True, help="bottleneck rate")
@click.option("--rtt-ms", default=20.0, show_default=True, help="base round-trip time")
@click.option("--json", "as_json", is_flag=True, help="print both reports as JSON")
def main(duration: float, rate_mbps: float, rtt_ms: float, as_json: bool) -> None:
    """The data path with aqmllmd in the loop, next to DualPI2 alone, same load."""
    args = ["--duration", str(duration), "--rate-mbps", str(rate_mbps),
            "--rtt-ms", str(rtt_ms), "--l4s", "2", "--classic-ecn", "1", "--classic", "1"]
    if not as_json:
        click.echo(f"Linux data path: {rate_mbps:g} Mbit/s bottleneck, {rtt_ms:g} ms RTT, "
                   f"2 scalable + 1 classic ECN + 1 classic flow, {duration:g} s per run")
    alone = run_host(args, with_daemon=False)
    looped = run_host(args, with_daemon=True)
    if as_json:
        click.echo(json.dumps({"dualpi2": alone, "aqmllmd": looped}, indent=2))
        return
    click.echo("\n".join(summarise("DualPI2 alone:", alone)))
    click.echo("\n".join(summarise(
        "aqmllmd in the loop (embedded default model: fitted to DualPI2, not yet the LLM):",
        looped)))


if __name__ == "__main__":
    main()
