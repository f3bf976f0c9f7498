"""One scenario on real stacks and in ns-3, side by side (DualPI2 alone in both).

As root: `.venv/bin/python bench/real_vs_ns3.py [bench/scenarios/real-vs-ns3-50m-20ms.toml]`

- real: build/aqm-fwd between network namespaces at the scenario's rate (or its
  Mahimahi trace), each flow's
  base RTT as its path; DCTCP flows are played by aqm-udpflow's ECT(1) sender (this
  kernel has no DCTCP or Prague), CUBIC and Reno by the kernel's TCP through iperf3,
  ECN on or off as the scenario says;
- ns-3: `aqmllm-sim run <scenario> --policy dualpi2`.

Prints a markdown table (and with --json the raw reports). Not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import click

from aqm_bridge._ffi import REPO_ROOT
from aqm_bridge.netns import Sender, unavailable

DEFAULT = REPO_ROOT / "bench" / "scenarios" / "real-vs-ns3-50m-20ms.toml"


def senders_of(scenario: dict[str, Any]) -> list[Sender]:
    out = []
    for f in scenario["flows"]:
        if f.get("count", 1) != 1 or "start_s" in f or "size_kb" in f:
            raise click.ClickException("only bulk flows of count 1 from time 0 here")
        if f["cc"] == "dctcp":
            out.append(Sender("ect1", f["rtt_ms"]))
        else:
            out.append(Sender(f["cc"], f["rtt_ms"],
                              ecn=bool(f.get("ecn", scenario.get("classic_ecn", False)))))
    return out


def run_ns3(path: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(Path(sys.executable).parent / "aqmllm-sim"), "run", str(path),
                        "--policy", "dualpi2", "--out", tmp], check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(Path(tmp, "result.json").read_text())


def table(real: dict[str, Any], ns3: dict[str, Any]) -> list[str]:
    fwd = real["forwarder"]
    # Over the flows' duration (the forwarder runs a little longer on both sides).
    util = sum(fwd["bytes_out"]) * 8 / (ns3["capacity_mbps"] * 1e6 * ns3["duration_s"])
    rows = [("utilisation (IP bytes sent / capacity)", f"{util:.3f}",
             f"{ns3['utilisation']:.3f}")]
    for f, nf in zip(real["flows"], ns3["flows"], strict=True):
        rep = f["report"]
        extra = (f", {rep.get('lost', 0)} lost" if f["cc"] == "ect1"
                 else f", {rep['retransmits']} retransmits")
        rows.append((f"{nf['cc']}{' ECN' if nf['ecn'] and nf['cc'] != 'dctcp' else ''}"
                     f" (real: {f['label']}) goodput Mbit/s",
                     f"{rep.get('goodput_mbps', 0):.1f}{extra}",
                     f"{nf['throughput_mbps']:.1f}"))
    for q, key in (("L", "l"), ("C", "c")):
        r, n = fwd[f"sojourn_ms_{key}"], ns3[f"sojourn_ms_{key}"]
        rows.append((f"{q} sojourn p50 / p99 / p99.9 ms",
                     f"{r['p50']:.2f} / {r['p99']:.2f} / {r['p999']:.2f}",
                     f"{n['p50']:.2f} / {n['p99']:.2f} / {n['p999']:.2f}"))
    rows.append(("marks C / L (step marks)",
                 f"{fwd['marks_fallback'][0]} / {fwd['marks_fallback'][1]} "
                 f"({fwd['step_marks']})",
                 f"{ns3['marks'][0]} / {ns3['marks'][1]} ({ns3['step_marks']})"))
    rows.append(("drops C / L", f"{fwd['drops_fallback'][0]} / {fwd['drops_fallback'][1]}",
                 f"{ns3['drops'][0]} / {ns3['drops'][1]}"))
    rows.append(("packets decided", str(fwd["decisions"]), str(ns3["decisions_fallback"])))
    out = ["| | real stacks (aqm-fwd) | ns-3 |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return out


@click.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default=DEFAULT)
@click.option("--json", "as_json", is_flag=True)
def main(scenario: Path, as_json: bool) -> None:
    why = unavailable()
    if why:
        raise click.ClickException(why)
    from aqmllmd.demo_tcp import run_once

    sc = tomllib.loads(scenario.read_text())
    if "rate_steps" in sc or "udp" in sc or "short_flows" in sc or sc.get("loss"):
        raise click.ClickException("a fixed rate or a trace, and bulk flows only, here")
    trace = (scenario.parent / sc["trace"]).resolve() if "trace" in sc else None
    real = run_once(senders_of(sc), rate_mbps=float(sc["rate_mbps"]), trace=trace,
                    duration_s=float(sc["duration_s"]), with_daemon=False, probes=False)
    ns3 = run_ns3(scenario)
    if as_json:
        click.echo(json.dumps({"real": real, "ns3": ns3}, indent=2))
        return
    link = f"trace {sc['trace']}" if "trace" in sc else f"{sc['rate_mbps']} Mbit/s"
    click.echo(f"{sc['name']}: {link}, {sc['duration_s']} s, DualPI2 alone")
    click.echo("\n".join(table(real, ns3)))


if __name__ == "__main__":
    main()
