"""`aqmllm-train ablation-closed-loop`: each backbone's student on the held-out suite.

The offline ablation (ablation.py) compares teachers; this one asks what reaches the
network. For each backbone kind (backbones.py) and training seed it runs the recipe's
pipeline with only [teacher] kind and seed changed: the same recordings (one directory,
--data, shared by every run), the same distillation, DAgger and export, then the closed
loop on the recipe's held-out suite and seeds, judged by the promotion gate
(closed_loop.gate). Baselines are reused from --baselines-from (they are deterministic),
so each run costs its teacher, its student and the model's own closed-loop runs.

A run whose RUN/model/closed-loop-results.json exists (and covers --eval-seeds) is not
run again: a stopped ablation resumes where it stopped. --eval-seeds replaces the
recipe's closed-loop seeds (fewer, when time is short), and every column is then judged
on those seeds alone, so the columns stay paired. --teacher-steps N trains every teacher
N steps instead of the recipe's (issue 18's scaling question in closed loop). --compare
NAME=RESULTS.json adds a column for a policy NAME in RESULTS.json (for example
dualpi2-gain2, DualPI2 with doubled PI gains), judged by the gate as if it were a model;
a RESULTS.json without that policy gives its model's rows (another model's results).

Writes OUT/results.json (per run: gate failures, gains, teacher compute, paired
differences) and OUT/table.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .backbones import BACKBONES
from .closed_loop import FIGURES, gate, gate_details

RESULTS = "closed-loop-results.json"


def _run_dir(out: Path, kind: str, seed: int, steps: int | None = None) -> Path:
    return out / (f"{kind}-seed{seed}" + (f"-steps{steps}" if steps else ""))


def run_pipeline(recipe: Path, out: Path, data: Path, kind: str, seed: int,
                 tiny: bool = False, echo: Any = print,
                 eval_seeds: list[int] | None = None, steps: int | None = None) -> Path:
    """One (kind, seed) through the recipe, with `steps` teacher steps instead of the
    recipe's if given; its closed-loop results.json. Results that cover eval_seeds
    (default: the recipe's) are kept."""
    from .recipe import Pipeline

    run = _run_dir(out, kind, seed, steps)
    done = run / "model" / RESULTS
    if done.is_file() and (eval_seeds is None or set(eval_seeds) <= {
            r["seed"] for r in json.loads(done.read_text())["rows"] if r["policy"] == "llm"}):
        echo(f"[{kind} seed {seed}] up to date: {done}")
        return done
    ev = {"seeds": ",".join(map(str, eval_seeds))} if eval_seeds else None
    Pipeline(recipe, run / "model", run, tiny=tiny, echo=echo, data=data,
             teacher={"kind": kind, "seed": seed, **({"max_steps": steps} if steps else {})},
             evaluate=ev).run()
    return done


def only_seeds(rows: list[dict[str, Any]], seeds: list[int] | None) -> list[dict[str, Any]]:
    return rows if seeds is None else [r for r in rows if r["seed"] in seeds]


def teacher_seconds(run: Path) -> dict[str, float]:
    """Wall seconds of the stages that use the teacher (train, label, DAgger's labels)."""
    f = run / "stage-seconds.json"
    kept = json.loads(f.read_text()) if f.is_file() else {}
    return {k: float(kept[k]) for k in ("teacher", "distill", "dagger") if k in kept}


def judge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The gate's verdict and its per-scenario details for one column."""
    details = gate_details(rows)
    return {"gate_failures": gate(rows),
            "better": [f"{d['scenario']} {d['figure']}" for d in details if d["better"]],
            "details": details}


def _pose_as_model(rows: list[dict[str, Any]], policy: str,
                   baseline_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not any(r["policy"] == policy for r in rows):
        policy = "llm"  # another model's closed-loop results: its own rows
    mine = [{**r, "policy": "llm"} for r in rows if r["policy"] == policy]
    if not mine:
        raise click.UsageError(f"--compare: no rows of policy {policy!r} nor of a model")
    return [r for r in baseline_rows if r["policy"] == "dualpi2"] + mine


def table(columns: dict[str, dict[str, Any]]) -> str:
    """Per scenario and figure, each column's paired difference from the best DualPI2
    (mean ± s.e. over the seeds; bold where the gate's harm bound fails, a star where
    Holm calls it better); then gate failures and teacher compute per column."""
    names = list(columns)
    head = "| scenario | figure | " + " | ".join(names) + " |"
    lines = [head, "|---|---|" + "---|" * len(names)]
    keyed = {n: {(d["scenario"], d["figure"]): d for d in c["details"]}
             for n, c in columns.items()}
    keys = sorted({k for m in keyed.values() for k in m},
                  key=lambda k: (k[0], FIGURES.index(k[1])))
    for key in keys:
        cells = []
        for n in names:
            d = keyed[n].get(key)
            if d is None:
                cells.append("-")
                continue
            cell = f"{d['mean_difference']:+.3f} ± {d['standard_error']:.3f}"
            if not d["non_inferior"]:
                cell = f"**{cell}**"
            cells.append(cell + (" *" if d["better"] else ""))
        lines.append(f"| {key[0].removeprefix('heldout-')} | {key[1]} | "
                     + " | ".join(cells) + " |")
    lines.append("| **gate failures** | | " + " | ".join(
        str(len(columns[n]["gate_failures"])) for n in names) + " |")
    lines.append("| **better (Holm)** | | " + " | ".join(
        str(len(columns[n]["better"])) for n in names) + " |")
    lines.append("| **teacher s (train / label+distil / DAgger)** | | " + " | ".join(
        " / ".join(f"{columns[n]['teacher_seconds'].get(k, 0):.0f}"
                   for k in ("teacher", "distill", "dagger"))
        if columns[n].get("teacher_seconds") else "-" for n in names) + " |")
    return "\n".join(lines) + "\n"


def _echo(message: str) -> None:
    click.echo(message, err=True)  # the pipeline's progress; stdout is the table


@click.command("ablation-closed-loop")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default="models/recipe.toml")
@click.option("--kinds", default=",".join(BACKBONES), show_default=True,
              help="backbone kinds, comma-separated, among " + ", ".join(BACKBONES))
@click.option("--seeds", default="0", show_default=True,
              help="teacher training seeds, comma-separated")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the recipe's recordings, shared by every run (recorded there if absent)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--compare", multiple=True, metavar="NAME=RESULTS.json",
              help="a policy's rows judged beside the students (repeatable)")
@click.option("--eval-seeds", default=None,
              help="closed-loop seeds, comma-separated, instead of the recipe's; every "
                   "column is judged on these seeds only")
@click.option("--teacher-steps", type=click.IntRange(min=1), default=None,
              help="teacher training steps instead of the recipe's (runs in "
                   "KIND-seedS-stepsN)")
@click.option("--tiny", is_flag=True, help="tiny Llama for pretrained/random (tests)")
@click.option("--json", "as_json", is_flag=True)
def ablation_closed_loop(recipe: Path, kinds: str, seeds: str, data: Path, out: Path,
                         compare: tuple[str, ...], eval_seeds: str | None,
                         teacher_steps: int | None, tiny: bool, as_json: bool) -> None:
    """Each backbone's student through RECIPE's pipeline and its held-out gate."""
    from .recipe import RecipeError

    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in kind_list if k not in BACKBONES]
    if bad or not kind_list:
        raise click.UsageError(f"--kinds: {bad or kinds!r}; choose among " + ", ".join(BACKBONES))
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        judged = ([int(s) for s in eval_seeds.split(",") if s.strip()] if eval_seeds
                  else None)
    except ValueError as e:
        raise click.UsageError(f"--seeds/--eval-seeds: {e}") from e
    extra = []
    for c in compare:
        name, sep, path = c.partition("=")
        if not sep or not Path(path).is_file():
            raise click.UsageError(f"--compare {c!r}: want NAME=RESULTS.json (an existing file)")
        extra.append((name, Path(path)))
    out.mkdir(parents=True, exist_ok=True)
    columns: dict[str, dict[str, Any]] = {}
    baseline_rows: list[dict[str, Any]] = []
    for kind in kind_list:
        for seed in seed_list:
            try:
                done = run_pipeline(recipe, out, data, kind, seed, tiny, _echo, judged,
                                    teacher_steps)
            except (RecipeError, RuntimeError) as e:
                raise click.ClickException(f"{kind} seed {seed}: {e}") from e
            rows = only_seeds(json.loads(done.read_text())["rows"], judged)
            baseline_rows = baseline_rows or rows
            name = f"{kind} s{seed}" + (f" {teacher_steps} steps" if teacher_steps else "")
            columns[name] = {
                "kind": kind, "seed": seed, "teacher_steps": teacher_steps,
                "results": str(done),
                "teacher_seconds": teacher_seconds(_run_dir(out, kind, seed, teacher_steps)),
                **judge(rows)}
    for name, path in extra:
        rows = _pose_as_model(only_seeds(json.loads(path.read_text())["rows"], judged), name,
                              baseline_rows)
        columns[name] = {"results": str(path), **judge(rows)}
    md = table(columns)
    (out / "results.json").write_text(json.dumps(
        {"recipe": str(recipe), "data": str(data), "eval_seeds": judged, "columns": columns},
        indent=1))
    (out / "table.md").write_text(md)
    click.echo(json.dumps(columns, indent=1) if as_json else md, nl=False)


if __name__ == "__main__":
    ablation_closed_loop(sys.argv[1:])
