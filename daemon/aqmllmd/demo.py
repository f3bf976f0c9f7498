"""The main job: the Linux data path and aqmllmd in closed loop, next to DualPI2 alone.

`python -m aqmllmd.demo` (what `make run` runs), as root, runs real TCP through
build/aqm-fwd between network namespaces (aqmllmd.demo_tcp); otherwise, or with --load or
AQMLLM_DEMO=synthetic, it says why and starts build/aqm-host on a responsive
synthetic load (scalable and classic flows through a bottleneck) twice:

1. DualPI2 alone, no channel;
2. the channel attached and aqmllmd serving the embedded default model as a separate
   process, exactly as on a router. That model decides nothing beyond DualPI2 (no
   trained model passes the promotion gate), so the two runs differ only by chance and
   by the channel's cost; --model serves another, e.g. the AQM-LLM student
   (aqmllmd/default_model/student.onnx).

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

from aqm_bridge.demo import HOST, compare, demo_options

from .ctl import status_or_none

#: Prepended to build/aqm-host's command line (benchmarks: ["chrt", "-f", "1"] keeps the
#: emulated link on time on a machine busy with other work).
HOST_PREFIX: list[str] = []


def run_host(args: list[str], with_daemon: bool) -> dict[str, Any]:
    if not with_daemon:
        if not HOST.is_file():
            raise click.ClickException(f"{HOST} missing: run `make` first")
        out = subprocess.run([*HOST_PREFIX, str(HOST), *args, "--no-channel", "--json"],
                             check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)
    return run_with_daemon(args)[0]


def run_with_daemon(args: list[str], model: str | None = None,
                    daemon_args: list[str] | None = None,
                    log: Path | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The data path with aqmllmd (serving `model`, or its default) in the loop: the
    host's report, and the daemon's status once the run is over (None if it had died)."""
    if not HOST.is_file():
        raise click.ClickException(f"{HOST} missing: run `make` first")
    name = f"aqm-demo-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        host = subprocess.Popen([*HOST_PREFIX, str(HOST), *args, "--shm", name,
                                 "--wait-consumer", "10",
                                 "--json"], stdout=subprocess.PIPE, text=True)
        while not Path("/dev/shm", name).exists() and host.poll() is None:
            time.sleep(0.01)
        control = f"ipc://{tmp}/ctl.sock"
        cmd = [sys.executable, "-m", "aqmllmd.main", "--channel", f"/dev/shm/{name}",
               "--control", control, "--metrics", "", *(daemon_args or [])]
        if model:
            cmd += ["--model", model]
        with open(log or os.devnull, "w") as err:
            daemon = subprocess.Popen(cmd, stderr=err)
            status = None
            try:
                out, _ = host.communicate(timeout=300)
                if daemon.poll() is None:
                    status = status_or_none(control)
            finally:
                daemon.terminate()
                daemon.wait(timeout=10)
    if host.returncode != 0:
        raise click.ClickException(f"aqm-host failed (exit {host.returncode})")
    return json.loads(out), status


@click.command()
@demo_options
@click.option("--model", type=click.Path(exists=True, dir_okay=False),
              help="serve this ONNX model instead of the embedded default "
                   "(python -m aqmllmd.hostile writes wrong ones)")
def main(model: str | None, **opts: Any) -> None:
    """The data path with aqmllmd in the loop, next to DualPI2 alone, same load: real TCP
    through build/aqm-fwd as root (aqmllmd.demo_tcp), else the synthetic load."""
    from . import demo_tcp

    why = demo_tcp.why_not(opts["load"])
    if why is None:
        opts.pop("load")
        demo_tcp.main_real(model=os.path.abspath(model) if model else None, **opts)
        return
    if not opts["as_json"]:
        click.echo(f"Real TCP through the forwarder not run: {why}.")
    if model is None:
        compare(run_host, "aqmllmd",
                "aqmllmd in the loop (embedded default model: decides nothing beyond "
                "DualPI2):", **opts)
        return
    path = os.path.abspath(model)

    def run(args: list[str], with_daemon: bool) -> dict[str, Any]:
        if not with_daemon:
            return run_host(args, False)
        report, status = run_with_daemon(args, model=path)
        if status is not None and status["watchdog"]["last_trip"]:
            click.echo(f"watchdog: {status['watchdog']['last_trip']['detail']}; "
                       f"{status['watchdog']['last_trip']['action']}", err=True)
        return report

    compare(run, "aqmllmd", f"aqmllmd in the loop (model {model}):", **opts)


if __name__ == "__main__":
    main()
