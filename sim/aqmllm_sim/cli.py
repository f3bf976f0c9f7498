"""`aqmllm-sim`: run and compare queue policies on ns-3 scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from .runner import RunError, run
from .scenario import POLICIES, ScenarioError, load
from .sweep import sweep
from .tune import TUNING_SEEDS, save, tune, write_step


def _scenario(path: str):  # noqa: ANN202
    try:
        return load(path)
    except ScenarioError as e:
        raise click.ClickException(str(e)) from e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Closed-loop evaluation of AQM-LLM policies on ns-3."""


class _Bar:
    """A progress bar in simulated seconds over one or more runs."""

    def __init__(self, total: float, desc: str, disable: bool) -> None:
        # disable=None: no bar when stderr is not a terminal.
        self.bar = tqdm(total=round(total, 3), desc=desc, unit="sim-s",
                        disable=True if disable else None,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} sim-s [{elapsed}]")
        self.base = 0.0
        self.done = 0.0

    def next_run(self) -> None:
        self.base = self.done

    def __call__(self, t: float) -> None:
        now = self.base + t
        if now > self.bar.n:
            self.bar.update(now - self.bar.n)
        self.done = max(self.done, now)

    def close(self) -> None:
        self.bar.close()


@cli.command("run")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", type=click.Choice(POLICIES), default="dualpi2", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="result.json, timeseries.csv, sojourns.bin and PNG plots here")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model for --policy llm (default: the AQM-LLM student, "
                   "aqmllmd/default_model/student.onnx)")
@click.option("--inference-latency-us", default=0, show_default=True,
              help="llm: a verdict counts only for packets that stayed this long")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def run_cmd(scenario: str, policy: str, out: Path | None, model: str | None,
            inference_latency_us: int, as_json: bool, quiet: bool) -> None:
    """Run SCENARIO under one policy."""
    sc = _scenario(scenario)
    bar = _Bar(sc.duration_s, f"{sc.name}: {policy}", quiet or as_json)
    try:
        result = run(sc, policy, out, model, inference_latency_us, progress=bar)
    except (RunError, ScenarioError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(HEADER)
        click.echo(_row(result))
        if result.get("short_flows"):
            click.echo(f"short flows: {json.dumps(result['short_flows'])}")


@cli.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--policies", default="dualpi2,pie,codel,fq_codel,red,fifo", show_default=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model for the llm policy (default: the AQM-LLM student, "
                   "aqmllmd/default_model/student.onnx)")
@click.option("--inference-latency-us", default=0, show_default=True,
              help="llm: a verdict counts only for packets that stayed this long")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="one directory per policy here (outputs of `run --out`)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def compare(scenario: str, policies: str, model: str | None, inference_latency_us: int,
            out: Path | None, as_json: bool, quiet: bool) -> None:
    """Run SCENARIO under several policies and print a table."""
    sc = _scenario(scenario)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise click.ClickException(f"unknown policies {bad}; known: {', '.join(POLICIES)}")
    results = []
    bar = _Bar(sc.duration_s * len(names), sc.name, quiet or as_json)
    try:
        for p in names:
            bar.next_run()
            results.append(run(sc, p, out / p if out else None, model=model,
                               inference_latency_us=inference_latency_us, progress=bar))
    except RunError as e:
        raise click.ClickException(str(e)) from e
    finally:
        bar.close()
    if out is not None:
        from .plots import compare_cdf

        compare_cdf({p: out / p / "sojourns.bin" for p in names}, out / "sojourn_cdf.png",
                    f"{sc.name}: sojourn per policy")
        (out / "compare.json").write_text(json.dumps(results, indent=2))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(HEADER)
    for r in results:
        click.echo(_row(r))


HEADER = (f"{'policy':10} {'util':>6} {'jain':>6} {'S/C':>6} {'L p99 ms':>9} "
          f"{'C/all p50':>10} {'C/all p99':>10} {'C/all p99.9':>11}")


def _row(r: dict) -> str:
    c = r.get("sojourn_ms_c") or r.get("sojourn_ms")
    lp99 = f"{r['sojourn_ms_l']['p99']:9.3f}" if "sojourn_ms_l" in r else f"{'-':>9}"
    ratio = r.get("scalable_classic_ratio")
    sc = f"{ratio:6.2f}" if ratio is not None else f"{'-':>6}"
    return (f"{r['policy']:10} {r['utilisation']:6.3f} {r['jain']:6.3f} {sc} {lp99} "
            f"{c['p50']:10.3f} {c['p99']:10.3f} {c['p999']:11.3f}")


@cli.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="dataset file (.npz)")
@click.option("--seeds", default="1", show_default=True, help="comma-separated run seeds")
@click.option("--policy", type=click.Choice(["dualpi2", "pie", "explore", "llm"]),
              default="dualpi2", show_default=True,
              help="the behaviour policy: DualPI2, PIE or DualPI2 with random exploration "
                   "in the core's place, or a model served by aqmllmd")
@click.option("--explore-rate", default=0.02, show_default=True,
              help="--policy explore: share of classic packets given a random action")
@click.option("--target-us", type=int, default=None,
              help="DualPI2's PI target for these runs (default: the scenario's)")
@click.option("--step-threshold-us", type=int, default=None,
              help="DualPI2's L step threshold for these runs (default: the scenario's)")
@click.option("--duration-s", type=float, default=None,
              help="simulated seconds per run (default: the scenario's)")
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="ONNX model for --policy llm")
def record(scenario: str, out: Path, seeds: str, policy: str, explore_rate: float,
           target_us: int | None, step_threshold_us: int | None, duration_s: float | None,
           model: str | None) -> None:
    """Record every packet's state, action and outcome (sim/DATASET.md)."""
    import dataclasses
    import tempfile

    import numpy as np

    from .dataset import load_rows, save_npz

    sc = _scenario(scenario)
    try:
        sc = dataclasses.replace(sc, **_core_overrides(target_us, step_threshold_us))
        if duration_s is not None:
            if not 0 < duration_s <= 3600:
                raise ScenarioError(f"--duration-s: {duration_s} is outside (0, 3600]")
            sc = dataclasses.replace(sc, duration_s=duration_s)
    except ScenarioError as e:
        raise click.BadParameter(str(e)) from e
    seed_list = [int(x) for x in seeds.split(",")]
    run_policy, behaviour = ("dualpi2", policy) if policy in ("pie", "explore") else (policy,
                                                                                      "dualpi2")
    parts, runs, series = [], [], []
    bar = _Bar(sc.duration_s * len(seed_list), f"record {sc.name} ({policy})", False)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for seed in seed_list:
                bar.next_run()
                rows_path = Path(tmp, f"rows-{seed}.bin")
                r = run(dataclasses.replace(sc, seed=seed), run_policy, Path(tmp, f"run-{seed}"),
                        model=model, record=rows_path, plots=False, progress=bar,
                        behaviour=behaviour, explore_rate=explore_rate)
                parts.append(load_rows(rows_path))
                runs.append({"seed": seed, "recorded": r["recorded"],
                             "utilisation": r["utilisation"]})
                series.append(Path(tmp, f"run-{seed}", "timeseries.csv"))
        except RunError as e:
            raise click.ClickException(str(e)) from e
        finally:
            bar.close()
        rows = np.concatenate(parts)
        save_npz(rows, out, {"scenario": sc.name, "behaviour_policy": policy,
                             "explore_rate": explore_rate if policy == "explore" else None,
                             "dualpi2": {"target_us": sc.target_us,
                                         "step_threshold_us": sc.step_threshold_us},
                             "dualpi2_default": target_us is None and step_threshold_us is None,
                             "model": model, "runs": runs, "interval_s": 0.1},
                 timeseries=series)
    click.echo(f"{len(rows)} rows from {len(runs)} run(s) -> {out}")


def _core_overrides(target_us: int | None, step_threshold_us: int | None) -> dict[str, int]:
    over = {}
    for name, value in (("target_us", target_us), ("step_threshold_us", step_threshold_us)):
        if value is not None:
            if not 1 <= value <= 1_000_000:
                raise ScenarioError(f"--{name.replace('_', '-')}: {value} is outside "
                                    "[1, 1000000]")
            over[name] = value
    return over


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
    if out is not None:
        from .plots import sweep_summary

        (out / "sweep.json").write_text(json.dumps(results, indent=2))
        sweep_summary(results, out / "sweep.png")
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"{'scenario':28} {HEADER}")
    for r in results:
        click.echo(f"{r['scenario']:28} {_row(r)}")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise click.BadParameter(f"want comma-separated integers, got {text!r}") from e
    if not seeds or min(seeds) < 1:
        raise click.BadParameter(f"want positive seeds, got {text!r}")
    return seeds


@cli.command("tune-dualpi2")
@click.argument("scenarios", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seeds", default=",".join(map(str, TUNING_SEEDS)), show_default=True,
              help="tuning seeds: never those of a comparison")
@click.option("--jobs", default=2, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="tune.json and tune.md (every candidate's means)")
@click.option("--write", is_flag=True,
              help="put each scenario's choice in its [dualpi2] table")
def tune_cmd(scenarios: tuple[Path, ...], seeds: str, jobs: int, out: Path,
             write: bool) -> None:
    """The best DualPI2 step settings per SCENARIO (sim/aqmllm_sim/tune.py)."""
    seed_list = _seeds(seeds)
    for s in scenarios:
        _scenario(str(s))
    try:
        chosen = tune(list(scenarios), seed_list, jobs)
    except (RunError, ScenarioError) as e:
        raise click.ClickException(str(e)) from e
    save(chosen, out)
    note = (f"best DualPI2 step for this link: aqmllm-sim tune-dualpi2, seeds "
            f"{','.join(map(str, seed_list))} (sim/README.md)")
    for name, c in sorted(chosen.items()):
        click.echo(f"{name:36} {c['chosen']}")
        if write:
            write_step(Path(c["path"]), c["config"], note)
    click.echo(f"-> {out / 'tune.md'}")


@cli.command("generate")
@click.option("--seed", type=int, required=True)
@click.option("--count", type=int, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def generate_cmd(seed: int, count: int, out: Path) -> None:
    """Randomised training scenarios (sim/aqmllm_sim/generate.py); never a held-out trace."""
    from .generate import GenerateError, generate

    try:
        paths = generate(seed, count, out)
    except (GenerateError, ScenarioError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{len(paths)} scenarios -> {out}")


if __name__ == "__main__":
    cli()
