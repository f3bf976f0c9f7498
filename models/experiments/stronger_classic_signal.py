"""Is the student more than DualPI2 with a stronger classic signal? (issue 21)

Runs `dualpi2-gain2` (the best DualPI2 per link with both PI gains doubled) on every
held-out scenario for the suite's seeds, pairs it seed by seed with the suite's best
DualPI2, and prints the paired differences beside those of the shipped student and of
the generated-recipe student with the LLM teacher, then judges dualpi2-gain2 by the
promotion gate as if it were a model (models/EXPERIMENTS.md, 2026-12-03).

    python models/experiments/stronger_classic_signal.py [--jobs 2] [--out results.json]
"""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from aqmllm_models.closed_loop import _baseline, gate, paired_rows

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = sorted((REPO / "sim" / "scenarios" / "held-out").glob("*.toml"))
SUITE = REPO / "sim" / "figures" / "heldout-suite" / "results.json"
GENERATED = REPO / "models" / "ablation" / "pretrained-seed0" / "closed-loop-results.json"
FIGURES = ("utilisation", "jain", "c_p99_ms", "l_p99_ms")


def _paired(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["scenario"], r["figure"]): r for r in paired_rows(rows)}


@click.command()
@click.option("--jobs", default=2, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write dualpi2-gain2's rows here (JSON)")
def main(jobs: int, out: Path | None) -> None:
    suite = json.loads(SUITE.read_text())["rows"]
    seeds = sorted({r["seed"] for r in suite})
    base = [r for r in suite if r["policy"] == "dualpi2"]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(max_workers=jobs) as pool:
        work = [(p, "dualpi2-gain2", s, Path(tmp) / f"{p.stem}-{s}")
                for p in HELD_OUT for s in seeds]
        gain2 = list(tqdm(pool.map(_baseline, work), total=len(work), desc="dualpi2-gain2"))
    if out is not None:
        out.write_text(json.dumps({"rows": gain2}, indent=1))
    # The gate's comparison is "llm" against "dualpi2": pose dualpi2-gain2 as the model.
    as_model = [{**r, "policy": "llm"} for r in gain2]
    columns = {"dualpi2-gain2": _paired(base + as_model),
               "shipped student": _paired(suite)}
    if GENERATED.is_file():
        columns["generated student"] = _paired(json.loads(GENERATED.read_text())["rows"])
    click.echo("| scenario | figure | " + " | ".join(columns) + " |")
    click.echo("|---|---|" + "---|" * len(columns))
    for key in sorted(columns["dualpi2-gain2"]):
        if key[1] not in FIGURES:
            continue
        cells = []
        for col in columns.values():
            r = col.get(key)
            cells.append("-" if r is None else
                         f"{r['mean_difference']:+.3f} ± {r['standard_error']:.3f}")
        click.echo(f"| {key[0].removeprefix('heldout-')} | {key[1]} | " + " | ".join(cells)
                   + " |")
    failures = gate(base + as_model)
    click.echo(f"\ndualpi2-gain2 judged by the gate as a model: {len(failures)} failure(s)")
    for f in failures:
        click.echo(f"- {f}")


if __name__ == "__main__":
    main()
