"""Simulated seconds per wall-clock second for the shipped ns-3 scenarios.

    .venv/bin/python bench/sim_bench.py [--policies dualpi2,llm,fifo] [--json]

Not a test: figures go to bench/SIM.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from aqmllm_sim.runner import run
from aqmllm_sim.scenario import load

SCENARIOS = Path(__file__).resolve().parents[1] / "sim" / "scenarios"


@click.command()
@click.option("--policies", default="dualpi2,llm,fifo", show_default=True)
@click.option("--scenarios", default="l4s-50m-20ms,rate-steps-50-25-5,many-flows-mixed,"
              "variable-capacity-trace,rtt-fairness-10m-20ms", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(policies: str, scenarios: str, as_json: bool) -> None:
    rows = []
    for name in scenarios.split(","):
        sc = load(SCENARIOS / f"{name}.toml")
        for policy in policies.split(","):
            t0 = time.perf_counter()
            r = run(sc, policy)
            wall = time.perf_counter() - t0
            rows.append({"scenario": name, "policy": policy, "simulated_s": sc.duration_s,
                         "wall_s": round(wall, 2),
                         "sim_s_per_wall_s": round(sc.duration_s / wall, 2),
                         "packets": r["queue_disc"]["sent"]})
            if not as_json:
                x = rows[-1]
                click.echo(f"{name:26} {policy:8} {x['simulated_s']:5.0f} s simulated in "
                           f"{x['wall_s']:6.2f} s: {x['sim_s_per_wall_s']:6.2f} sim-s/s "
                           f"({x['packets']} packets)")
    if as_json:
        click.echo(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
