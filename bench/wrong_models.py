"""What a wrong model costs: delivered rate with each hostile model in the loop, against
DualPI2 alone, on the main job's load and on an ns-3 scenario.

    .venv/bin/python bench/wrong_models.py [--duration 5] [--sim-duration 5] [--json]

The main job (`make run`'s load: build/aqm-host, 100 Mbit/s, 20 ms, 2 scalable + 1
classic ECN + 1 classic flow) runs with DualPI2 alone, then with aqmllmd serving the
shipped default model and each hostile model of `aqmllmd.hostile` (always-drop,
always-mark, uniform, adversarial), each with the daemon's harm watchdog on (the default)
and off (what the core's harm budget holds alone). The ns-3 scenario
(sim/scenarios/l4s-50m-20ms.toml, shortened to --sim-duration) runs `--policy dualpi2`,
then `--policy llm --model M` for the same models, watchdog on. Each line: delivered
Mbit/s, its share of DualPI2 alone's, the watchdog's trips and what it did. Not a test:
figures go to daemon/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import click

from aqm_bridge._ffi import REPO_ROOT
from aqmllmd import hostile
from aqmllmd.default_model import DEFAULT_MODEL, STUDENT_MODEL
from aqmllmd.demo import run_host, run_with_daemon

HOSTILE = ("always-drop", "always-mark", "uniform", "adversarial")
SCENARIO = REPO_ROOT / "sim" / "scenarios" / "l4s-50m-20ms.toml"
SIM = [str(Path(sys.executable).parent / "aqmllm-sim")]


def main_job_args(duration: float) -> list[str]:
    return ["--duration", str(duration), "--rate-mbps", "100", "--rtt-ms", "20", "--l4s", "2",
            "--classic-ecn", "1", "--classic", "1"]


def _trips(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {"watchdog_trips": None, "watchdog_action": "daemon gone"}
    wd = status["watchdog"]
    return {"watchdog_trips": sum(wd["trips"].values()),
            "watchdog_action": (wd["last_trip"] or {}).get("action", ""),
            "served_at_end": status["model"]["version"], "paused_at_end": status["paused"]}


def main_job(models: dict[str, str], duration: float, tmp: Path, run: int = 0,
             budget_off: bool = False) -> list[dict[str, Any]]:
    args = main_job_args(duration)
    rows = [{"load": "main job", "model": "DualPI2 alone", "watchdog": "-", "run": run,
             "budget": "-", "delivered_mbps": run_host(args, False)["delivered_mbps"]}]
    off = tmp / "watchdog-off.toml"
    off.write_text("[watchdog]\nenabled = false\n")
    setups = [(True, True), (False, True)] + ([(True, False), (False, False)]
                                              if budget_off else [])
    for name, path in models.items():
        for watchdog, budget in setups:
            if name in ("default", "student") and not (watchdog and budget):
                continue
            report, status = run_with_daemon(
                args + ([] if budget else ["--harm-budget", "off"]), model=path,
                daemon_args=[] if watchdog else ["-c", str(off)],
                log=tmp / f"{name}-{watchdog}.log")
            rows.append({"load": "main job", "model": name, "run": run,
                         "budget": "on" if budget else "off",
                         "watchdog": "on" if watchdog else "off",
                         "delivered_mbps": report["delivered_mbps"],
                         "model_share": report["model_share"],
                         "verdicts_capped": sum(report.get("verdicts_capped", [0, 0])),
                         **_trips(status)})
    return rows


def real_tcp(models: dict[str, str], duration: float) -> list[dict[str, Any]]:
    """The main job on real packets (aqmllmd.demo_tcp: kernel TCP and the scalable UDP
    sender through build/aqm-fwd, 100 Mbit/s, 20 ms), as root."""
    from aqmllmd import demo_tcp

    senders = demo_tcp.mix(20.0)
    load = "real TCP (aqm-fwd)"
    alone = demo_tcp.run_once(senders, rate_mbps=100, duration_s=duration, with_daemon=False,
                              probes=False)
    rows = [{"load": load, "model": "DualPI2 alone", "watchdog": "-",
             "delivered_mbps": alone["forwarder"]["delivered_mbps"]}]
    for name, path in models.items():
        r = demo_tcp.run_once(senders, rate_mbps=100, duration_s=duration, with_daemon=True,
                              model=path, probes=False)
        f = r["forwarder"]
        rows.append({"load": load, "model": name, "watchdog": "on",
                     "delivered_mbps": f["delivered_mbps"], "model_share": f["model_share"],
                     "verdicts_capped": sum(f.get("verdicts_capped", [0, 0])),
                     **_trips(r.get("daemon_status"))})
    return rows


def ns3(models: dict[str, str], duration: float, tmp: Path) -> list[dict[str, Any]]:
    scenario = tomllib.loads(SCENARIO.read_text())
    text = SCENARIO.read_text().replace(f"duration_s = {scenario['duration_s']}",
                                        f"duration_s = {duration:g}")
    short = tmp / "scenario.toml"
    short.write_text(text)
    rows = []
    for name, path in {"DualPI2 alone": "", **models}.items():
        cmd = [*SIM, "run", str(short), "--json", "-q"]
        cmd += ["--policy", "dualpi2"] if not path else ["--policy", "llm", "--model", path]
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
        r = json.loads(out.stdout)
        rows.append({"load": f"ns-3 {scenario['name']} {duration:g} s", "model": name,
                     "watchdog": "on" if path else "-",
                     "delivered_mbps": round(sum(f["throughput_mbps"] for f in r["flows"]), 3),
                     "utilisation": r["utilisation"],
                     "verdicts_capped": sum(r.get("verdicts_capped", [0, 0])),
                     "verdict_timeouts": r.get("verdict_timeouts"),
                     "wall_s": round(time.monotonic() - t0, 1)})
    return rows


@click.command()
@click.option("--duration", default=5.0, show_default=True, help="main job: seconds per run")
@click.option("--sim-duration", default=5.0, show_default=True,
              help="ns-3: simulated seconds per run (0: skip ns-3)")
@click.option("--only", multiple=True, type=click.Choice(("default", "student", *HOSTILE)),
              help="only these models")
@click.option("--realtime/--no-realtime", default=True, show_default=True,
              help="main job: build/aqm-host under SCHED_FIFO 1 (chrt), as aqm-fwd runs, so "
                   "that other work on the machine does not slow the emulated link")
@click.option("--runs", default=1, show_default=True,
              help="main job: repeat DualPI2 alone and every model this many times")
@click.option("--budget-off/--no-budget-off", default=False, show_default=True,
              help="main job: also with the core's harm budget off (aqm-host "
                   "--harm-budget off), the watchdog alone and neither")
@click.option("--tcp/--no-tcp", default=False, show_default=True,
              help="also the real-TCP main job through aqm-fwd (root, namespaces)")
@click.option("--json", "as_json", is_flag=True)
def main(duration: float, sim_duration: float, only: tuple[str, ...], realtime: bool,
         runs: int, budget_off: bool, tcp: bool, as_json: bool) -> None:
    """Delivered rate with wrong models in the loop, against DualPI2 alone."""
    from aqmllmd import demo

    if realtime:
        if subprocess.run(["chrt", "-f", "1", "true"], capture_output=True).returncode:
            raise click.ClickException("chrt -f 1 not allowed here: --no-realtime")
        demo.HOST_PREFIX[:] = ["chrt", "-f", "1"]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        os.chmod(tmp, 0o755)
        models = {"default": str(DEFAULT_MODEL), "student": str(STUDENT_MODEL)}
        models.update({k: str(hostile.write(k, tmp / f"{k}.onnx")) for k in HOSTILE})
        if only:
            models = {k: v for k, v in models.items() if k in only}
        rows = [r for i in range(runs)
                for r in main_job(models, duration, tmp, i, budget_off)]
        if tcp:
            rows += real_tcp(models, duration)
        if sim_duration > 0:
            rows += ns3(models, sim_duration, tmp)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    base: dict[str, float] = {}
    for r in rows:
        if r["model"] == "DualPI2 alone":  # each run against the DualPI2 run before it
            base[r["load"]] = r["delivered_mbps"]
        share = 100 * r["delivered_mbps"] / base[r["load"]]
        extra = ""
        if r.get("watchdog_trips") is not None:
            extra = f"  trips {r['watchdog_trips']} {r.get('watchdog_action', '')}"
        click.echo(f"{r['load']:<24} {r['model']:<14} budget {r.get('budget', 'on'):<3} "
                   f"watchdog {r['watchdog']:<3} "
                   f"{r['delivered_mbps']:7.2f} Mbit/s {share:6.1f} %  capped "
                   f"{r.get('verdicts_capped', 0)}{extra}")


if __name__ == "__main__":
    main()
