"""`aqmllm-sim`: run and compare queue policies on ns-3 scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from .runner import RunError, run
from .scenario import POLICIES, ScenarioError, load
from .sweep import sweep


def _scenario(path: str):  # noqa: ANN202
    try:
        return load(path)
    except ScenarioError as e:
        raise click.ClickException(str(e)) from e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Closed-loop evaluation of AQM-LLM policies on ns-3."""


@cli.command("run")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", type=click.Choice(POLICIES), default="dualpi2", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model for --policy llm (default: aqmllmd's default model)")
@click.option("--inference-latency-us", default=0, show_default=True,
              help="llm: a verdict counts only for packets that stayed this long")
@click.option("--json", "as_json", is_flag=True)
def run_cmd(scenario: str, policy: str, out: Path | None, model: str | None,
            inference_latency_us: int, as_json: bool) -> None:
    """Run SCENARIO under one policy."""
    try:
        result = run(_scenario(scenario), policy, out, model, inference_latency_us)
    except (RunError, ScenarioError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(result, indent=2) if as_json else _row(result))


@cli.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--policies", default="dualpi2,pie,codel,fifo", show_default=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model for the llm policy (default: aqmllmd's default model)")
@click.option("--inference-latency-us", default=0, show_default=True,
              help="llm: a verdict counts only for packets that stayed this long")
@click.option("--json", "as_json", is_flag=True)
def compare(scenario: str, policies: str, model: str | None, inference_latency_us: int,
            as_json: bool) -> None:
    """Run SCENARIO under several policies and print a table."""
    sc = _scenario(scenario)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise click.ClickException(f"unknown policies {bad}; known: {', '.join(POLICIES)}")
    results = []
    for p in tqdm(names, desc=sc.name, disable=as_json):
        try:
            results.append(run(sc, p, model=model, inference_latency_us=inference_latency_us))
        except RunError as e:
            raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"{'policy':10} {'util':>6} {'jain':>6} {'L p99 ms':>9} {'C/all p50':>10} "
               f"{'C/all p99':>10}")
    for r in results:
        click.echo(_row(r))


def _row(r: dict) -> str:
    c = r.get("sojourn_ms_c") or r.get("sojourn_ms")
    lp99 = f"{r['sojourn_ms_l']['p99']:9.3f}" if "sojourn_ms_l" in r else f"{'-':>9}"
    return (f"{r['policy']:10} {r['utilisation']:6.3f} {r['jain']:6.3f} {lp99} "
            f"{c['p50']:10.3f} {c['p99']:10.3f}")


@cli.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="dataset file (.npz)")
@click.option("--seeds", default="1", show_default=True, help="comma-separated run seeds")
@click.option("--policy", type=click.Choice(["dualpi2", "llm"]), default="dualpi2",
              show_default=True, help="the behaviour policy")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model for --policy llm")
def record(scenario: str, out: Path, seeds: str, policy: str, model: str | None) -> None:
    """Record every packet's state, action and outcome (sim/DATASET.md)."""
    import dataclasses
    import tempfile

    import numpy as np

    from .dataset import load_rows, save_npz

    sc = _scenario(scenario)
    parts, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in tqdm([int(s) for s in seeds.split(",")], desc="record"):
            rows_path = Path(tmp, f"rows-{seed}.bin")
            try:
                r = run(dataclasses.replace(sc, seed=seed), policy, Path(tmp, f"run-{seed}"),
                        model=model, record=rows_path, plots=False)
            except RunError as e:
                raise click.ClickException(str(e)) from e
            parts.append(load_rows(rows_path))
            runs.append({"seed": seed, "recorded": r["recorded"],
                         "utilisation": r["utilisation"]})
        rows = np.concatenate(parts)
        last = Path(tmp, f"run-{runs[-1]['seed']}", "timeseries.csv")
        save_npz(rows, out, {"scenario": sc.name, "behaviour_policy": policy,
                             "model": model, "runs": runs}, timeseries=last)
    click.echo(f"{len(rows)} rows from {len(runs)} run(s) -> {out}")


@cli.command("sweep")
@click.argument("scenarios", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--policies", default="dualpi2,fifo", show_default=True)
@click.option("--jobs", default=2, show_default=True, help="parallel local processes")
@click.option("--ray", "ray_address", default=None,
              help="run on a Ray cluster at this address instead")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
def sweep_cmd(scenarios: tuple[str, ...], policies: str, jobs: int, ray_address: str | None,
              out: Path | None, as_json: bool) -> None:
    """Every SCENARIO under every policy, in parallel."""
    names = [p.strip() for p in policies.split(",") if p.strip()]
    try:
        results = sweep([_scenario(s) for s in scenarios], names, jobs, ray_address, out)
    except (RunError, ScenarioError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(f"{r['scenario']:28} {_row(r)}")
