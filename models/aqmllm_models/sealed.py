"""`aqmllm-train sealed-test`: the once-only test that decides installation.

The held-out suite (sim/scenarios/held-out/) is the development set: recipes have been
chosen on it, so a result there is reported as such. The sealed set
(sim/scenarios/sealed/: other scenarios, other traces, seeds 201-210) is evaluated once
per frozen recipe, on two or more independent rebuilds of `make model` from it, and
nothing else decides whether a model becomes aqmllmd's packaged default: every rebuild
must pass the promotion gate (closed_loop.gate) there.

"Once" is kept by a ledger committed with the repository (models/sealed/LEDGER.json):
the recipe's digest is written there *before* the first run, so a run stopped half way
has used the recipe's turn too, and a second call for the same recipe is refused. A
changed recipe is a new recipe, and its turn is recorded beside the old one, so how
many recipes have looked at the sealed set is never hidden.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import click

from .closed_loop import evaluate_closed_loop, gate, gate_table
from .recipe import DAEMON_DEFAULT, REPO, _rel

SEALED = REPO / "sim" / "scenarios" / "sealed"
LEDGER = REPO / "models" / "sealed" / "LEDGER.json"
SEALED_SEEDS = "201,202,203,204,205,206,207,208,209,210"
BASELINES = "dualpi2,dualpi2-default,fq_codel,pie"
MIN_REBUILDS = 2


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def graph_digest(path: Path) -> str:
    """The digest of a model's graph and weights without its metadata: two rebuilds in
    different work directories differ only in their description, and are one model."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and others for a bad file
        raise click.UsageError(f"{path}: not an ONNX model ({e})") from e
    model.ClearField("metadata_props")
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise click.ClickException(f"{path}: not a ledger ({e})") from e
    if not isinstance(entries, list):
        raise click.ClickException(f"{path}: not a ledger (want a JSON list)")
    return entries


def write_ledger(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.replace(path)


@click.command("sealed-test")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("models", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="results.json, table.md and each rebuild's closed loop")
@click.option("--seeds", default=SEALED_SEEDS, show_default=True)
@click.option("--baselines", default=BASELINES, show_default=True)
@click.option("--jobs", default=2, show_default=True, help="baseline runs in parallel")
@click.option("--install", is_flag=True,
              help="if every rebuild passes, ship the first as aqmllmd's packaged default")
@click.option("--scenarios", "scenario_dir", default=SEALED, show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="the sealed scenarios (another directory only for tests)")
@click.option("--ledger", default=LEDGER, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="the record of which recipes have used their turn")
def sealed_test(recipe: Path, models: tuple[Path, ...], out: Path, seeds: str,
                baselines: str, jobs: int, install: bool, scenario_dir: Path,
                ledger: Path) -> None:
    """Judge MODELS, independent rebuilds of RECIPE, once on the sealed scenarios."""
    if len(models) < MIN_REBUILDS or len({graph_digest(m) for m in models}) < len(models):
        raise click.UsageError(
            f"a frozen recipe is judged on {MIN_REBUILDS} or more independent rebuilds "
            "(`aqmllm-train pipeline RECIPE --work W1 --out O1 --until-export "
            "--teacher-seed 1`, then W2/O2 with another seed; different graphs: a rebuild "
            "with the same seed is the same model): one model can pass by luck")
    scenarios = sorted(scenario_dir.glob("*.toml"))
    if not scenarios:
        raise click.UsageError(f"{scenario_dir}: no scenario")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as e:
        raise click.UsageError(f"--seeds: {e}") from e
    recipe_sha = digest(recipe)
    entries = read_ledger(ledger)
    used = [e for e in entries if e.get("recipe_sha256") == recipe_sha]
    if used:
        raise click.ClickException(
            f"the sealed set has already judged this recipe ({_rel(str(recipe))}, "
            f"{used[0].get('started')}, {used[0].get('status')}; {_rel(str(ledger))}): each "
            "frozen recipe gets one turn; a changed recipe is a new one")
    entry: dict[str, Any] = {
        "recipe": _rel(str(recipe)), "recipe_sha256": recipe_sha,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "status": "started",
        "scenarios": [p.stem for p in scenarios], "seeds": seed_list,
        "models": [{"path": _rel(str(m)), "sha256": digest(m)} for m in models]}
    write_ledger(ledger, [*entries, entry])  # the turn is used from here on
    names = [b.strip() for b in baselines.split(",") if b.strip()]
    reuse: list[dict[str, Any]] | None = None
    tables = []
    for i, (model, record) in enumerate(zip(models, entry["models"], strict=True)):
        try:
            rows = evaluate_closed_loop(model, scenarios, names, seed_list,
                                        out / f"rebuild-{i}", jobs, None, reuse)
        except (ValueError, RuntimeError) as e:
            entry["status"] = f"failed: {e}"
            write_ledger(ledger, [*entries, entry])
            raise click.ClickException(str(e)) from e
        reuse = reuse or rows  # the baselines are the same for every rebuild
        record["gate_failures"] = gate(rows)
        tables.append(f"### Rebuild {i}: {_rel(str(model))}\n\n{gate_table(rows)}\n")
    passed = all(not r["gate_failures"] for r in entry["models"])
    entry.update(status="passed" if passed else "failed the gate",
                 finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if install and passed:
        shutil.copy(models[0], DAEMON_DEFAULT)
        DAEMON_DEFAULT.chmod(0o644)
        entry["installed"] = _rel(str(DAEMON_DEFAULT))
    write_ledger(ledger, [*entries, entry])
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(entry, indent=1))
    (out / "table.md").write_text("\n".join(tables))
    for r in entry["models"]:
        verdict = "passes" if not r["gate_failures"] else \
            f"fails ({len(r['gate_failures'])} failure(s))"
        click.echo(f"{r['path']}: {verdict}")
        for why in r["gate_failures"]:
            click.echo(f"  - {why}")
    click.echo(f"sealed test of {_rel(str(recipe))}: {entry['status']}"
               + (f"; installed as {entry['installed']}" if "installed" in entry else ""))
