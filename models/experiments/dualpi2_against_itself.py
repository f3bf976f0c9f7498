"""Could DualPI2 with other parameters pass the promotion gate against the default one?

Runs the core's DualPI2 on every held-out scenario with several PI targets and L4S step
thresholds, seeds 1-3, and prints the mean of each (models/EXPERIMENTS.md, 2026-11-25).

    python models/experiments/dualpi2_against_itself.py [--jobs 2]
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from aqmllm_models.closed_loop import COLUMNS, summarise
from aqmllm_sim.runner import run
from aqmllm_sim.scenario import load

HELD_OUT = Path(__file__).resolve().parents[2] / "sim" / "scenarios" / "held-out"
#: (PI target, L4S step threshold) in microseconds; the first is the default.
VARIANTS = ((15000, 1000), (10000, 1000), (5000, 1000), (15000, 500), (5000, 500))
SEEDS = (1, 2, 3)


def _one(job: tuple[Path, int, int, int]) -> tuple[str, int, int, dict[str, Any]]:
    path, target_us, step_us, seed = job
    sc = dataclasses.replace(load(path), seed=seed, target_us=target_us,
                             step_threshold_us=step_us)
    return sc.name, target_us, step_us, summarise(run(sc, "dualpi2", plots=False), seed)


@click.command()
@click.option("--jobs", default=2, show_default=True, help="runs at once (each is one ns-3)")
def main(jobs: int) -> None:
    work = [(p, t, s, seed) for p in sorted(HELD_OUT.glob("*.toml")) for t, s in VARIANTS
            for seed in SEEDS]
    with ThreadPoolExecutor(jobs) as ex:
        results = list(ex.map(_one, work))
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for name, t, s, row in results:
        runs.setdefault((name, t, s), []).append(row)
    for (name, t, s), rows in runs.items():
        means = " ".join(f"{c}={sum(r[c] for r in rows) / len(rows):.3f}" for c in COLUMNS)
        click.echo(f"{name:28} target_us={t:<6} step_us={s:<5} {means}")


if __name__ == "__main__":
    main()
