"""`aqmllm-train`: teacher, distill, export, evaluate, lora-vs-full, ablations."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from aqmllmd import contract

from .ablation import ablation
from .ablation_closed_loop import ablation_closed_loop
from .backbones import BACKBONES
from .checkpoint import (
    CheckpointError,
    build_teacher,
    load_teacher,
    save_teacher,
    teacher_returns,
    teacher_weights,
)
from .data import RETURN_KINDS
from .sealed import sealed_test


def _steps(*datasets: str, returns: str = "packet"):  # noqa: ANN202
    from .data import load

    try:
        return load(*datasets, returns=returns)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train the AQM-LLM teacher, distil the student, export it for aqmllmd."""


cli.add_command(ablation)  # ablation.py: the teacher's backbones compared
cli.add_command(ablation_closed_loop)  # ... and their students on the held-out suite
cli.add_command(sealed_test)  # sealed.py: the once-only test that decides installation


@cli.command()
@click.argument("datasets", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--kind", type=click.Choice(BACKBONES), default="pretrained", show_default=True,
              help="the backbone: the pretrained LM with LoRA, or a control "
                   "(models/aqmllm_models/backbones.py)")
@click.option("--backbone", default=None, help="HF model dir or GGUF file (default SmolLM2)")
@click.option("--tiny", is_flag=True, help="a tiny random Llama instead (tests, smoke runs)")
@click.option("--window", default=8, show_default=True)
@click.option("--epochs", default=1, show_default=True)
@click.option("--max-steps", default=None, type=int)
@click.option("--batch", default=32, show_default=True, help="windows per step (all processes)")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--checkpoint-every", default=50, show_default=True)
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoint")
@click.option("--weight-power", default=1.0, show_default=True,
              help="class weights = (inverse action frequency) ** this; 0.5 is milder")
@click.option("--returns", type=click.Choice(RETURN_KINDS), default="packet",
              show_default=True,
              help="the return it is conditioned on: per packet, or per 100 ms interval "
                   "relative to DualPI2 in the same scenario and seed (needs DualPI2's "
                   "recording among the DATASETS)")
@click.option("--seed", default=0, show_default=True,
              help="seeds the encoder's, head's and adapters' initialisation and the order "
                   "of the windows: the same seed and data give the same teacher")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def teacher(datasets: tuple[str, ...], kind: str, backbone: str | None, tiny: bool, window: int,
            epochs: int, max_steps: int | None, batch: int, lr: float, checkpoint_every: int,
            resume: bool, weight_power: float, returns: str, seed: int, out: Path) -> None:
    """Return-conditioned offline RL on recorded DATASETS; saves adapters and heads.

    Under `accelerate launch` it runs on every process given (GPUs, machines)."""
    import torch
    from accelerate import PartialState

    from .train import train_teacher

    steps = _steps(*datasets, returns=returns)
    torch.manual_seed(seed)  # before the model exists: its new layers start at random
    model = build_teacher(steps, backbone, tiny, kind=kind, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    r = train_teacher(model, steps, k=window, epochs=epochs, lr=lr, max_steps=max_steps,
                      batch=batch, seed=seed, checkpoint=out / "checkpoint",
                      checkpoint_every=checkpoint_every, resume=resume,
                      weight_power=weight_power)
    state = PartialState()
    if state.is_main_process:
        save_teacher(model, out, {**r, "datasets": list(datasets), "window": window,
                                  "seed": seed, "kind": kind,
                                  "tiny": tiny, "backbone": backbone, "lr": lr, "batch": batch,
                                  "weight_power": weight_power, "returns": returns,
                                  "windows_available": int(len(steps.actions))})
        click.echo(json.dumps({k: v for k, v in r.items() if k != "losses"}))
    _leave_process_group()


def _leave_process_group() -> None:
    """Every process waits for the writer, then leaves the group cleanly (a process that
    exits with the group's threads still running aborts)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@cli.command("lora-vs-full")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.option("--backbone", default=None)
@click.option("--tiny", is_flag=True)
@click.option("--steps", "n_steps", default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def lora_vs_full(dataset: str, backbone: str | None, tiny: bool, n_steps: int,
                 as_json: bool) -> None:
    """Peak memory and time per training step, LoRA against full fine-tuning."""
    import subprocess
    import sys

    rows = []
    for mode in ("lora", "full"):
        # A fresh process per mode, so peak RSS is that mode's alone.
        code = (f"from aqmllm_models.cli import _measure; _measure({dataset!r}, {backbone!r}, "
                f"{tiny!r}, {mode == 'full'!r}, {n_steps})")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode != 0:
            raise click.ClickException(r.stderr[-2000:])
        rows.append({"mode": mode, **json.loads(r.stdout.strip().splitlines()[-1])})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'mode':6} {'trainable':>12} {'peak RSS MB':>12} {'s/step':>8}")
    for r in rows:
        click.echo(f"{r['mode']:6} {r['trainable']:12,} {r['peak_rss_mb']:12.0f} "
                   f"{r['seconds_per_step']:8.3f}")
    lo, fu = rows
    click.echo(f"LoRA vs full: memory {100 * (lo['peak_rss_mb'] / fu['peak_rss_mb'] - 1):+.0f} %,"
               f" time {100 * (lo['seconds_per_step'] / fu['seconds_per_step'] - 1):+.0f} %")


def _measure(dataset: str, backbone: str | None, tiny: bool, full: bool, n: int) -> None:
    from .train import train_teacher

    steps = _steps(dataset)
    model = build_teacher(steps, backbone, tiny, full=full)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    r = train_teacher(model, steps, max_steps=n, progress=False, batch=8)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"trainable": trainable, "peak_rss_mb": peak,
                      "seconds_per_step": r["seconds_per_step"]}))


def _teacher_input(f: Callable[..., None]) -> Callable[..., None]:
    """The trained teacher and the recorded states it labels, shared by distill and
    dagger; the backbone must be the one the teacher was trained on."""
    f = click.option("--tiny", is_flag=True)(f)
    f = click.option("--backbone", default=None)(f)
    f = click.argument("datasets", nargs=-1, required=True,
                       type=click.Path(exists=True, dir_okay=False))(f)
    return click.argument("teacher_dir",
                          type=click.Path(exists=True, file_okay=False, path_type=Path))(f)


def _student_options(f: Callable[..., None]) -> Callable[..., None]:
    """The student's shape, shared by distill and dagger (student.py)."""
    f = click.option("--hidden", default=64, show_default=True)(f)
    f = click.option("--queues", type=click.Choice(["both", "classic", "coupled"]),
                     default="both", show_default=True,
                     help="the queues it decides beyond its guard; classic: the L4S queue is "
                          "DualPI2's alone; coupled: L4S packets get DualPI2's coupling of "
                          "the student's classic signal (both need --guard dualpi2)")(f)
    f = click.option("--guard", type=click.Choice(contract.VERDICT_GUARDS), default="dualpi2",
                     show_default=True,
                     help="the core's verdict guard the student is made for; dualpi2: it "
                          "learns what the target adds beyond DualPI2's own decisions")(f)
    f = click.option("--teacher-weight", type=click.FloatRange(0, 1), default=1.0,
                     show_default=True,
                     help="w: learn prior^(1-w) * teacher^w (1: the teacher alone)")(f)
    f = click.option("--step-ms", type=click.FloatRange(min=0, min_open=True), default=1.0,
                     show_default=True, help="the prior's L4S step threshold")(f)
    return click.option("--prior", type=click.Choice(["none", "dualpi2"]), default="none",
                        show_default=True,
                        help="dualpi2: the network learns a correction to DualPI2's own "
                             "decision")(f)


def _check_student_shape(prior: str, step_ms: float, teacher_weight: float,
                         guard: str, queues: str) -> None:
    """Refuse a shape the student would refuse, before the teacher's slow labelling."""
    from .student import check_shape

    try:
        check_shape(prior, step_ms, teacher_weight, guard, queues)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


@cli.command()
@_teacher_input
@click.option("--target-return-quantile", default=0.9, show_default=True,
              help="condition the teacher on this quantile of recorded returns")
@click.option("--max-windows", default=20000, show_default=True,
              help="states the teacher labels (its forward pass is the cost)")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="undo the training's class weights, so the student can be sampled")
@click.option("--epochs", default=20, show_default=True)
@_student_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="student directory (student.safetensors, student.json)")
def distill(teacher_dir: Path, datasets: tuple[str, ...], backbone: str | None, tiny: bool,
            target_return_quantile: float, max_windows: int, calibrate: bool, epochs: int,
            hidden: int, prior: str, step_ms: float, teacher_weight: float, guard: str,
            queues: str, out: Path) -> None:
    """Distil the teacher into the student on recorded states (KL to its distributions)."""
    _check_student_shape(prior, step_ms, teacher_weight, guard, queues)
    from .student import Student
    from .student import distill as run_distill
    from .student import save as save_student
    from .train import teacher_probs

    steps = _steps(*datasets, returns=teacher_returns(teacher_dir))
    try:
        model = load_teacher(steps, teacher_dir, backbone, tiny)
    except CheckpointError as e:
        raise click.ClickException(str(e)) from e
    target = float(np.quantile(steps.returns, target_return_quantile))
    t0 = time.perf_counter()
    probs, idx = teacher_probs(model, steps, target_return=target, max_windows=max_windows,
                               weights=teacher_weights(teacher_dir) if calibrate else None,
                               progress=True)
    t_label = time.perf_counter() - t0
    x = steps.features[idx]
    student = Student(steps.features, hidden, prior, step_ms, teacher_weight, guard, queues)
    history = run_distill(student, x, probs, epochs=epochs)
    info = {"teacher": str(teacher_dir), "datasets": list(datasets), "target_return": target,
            "target_return_quantile": target_return_quantile, "states": int(len(x)),
            "calibrated": calibrate, "kl_first": history[0], "kl_last": history[-1],
            "teacher_label_seconds": t_label,
            "teacher_mean_probs": probs.mean(0).tolist()}
    save_student(student, out, info)
    np.savez_compressed(out / "labels.npz", states=x, probs=probs)  # for dagger --labels
    click.echo(json.dumps(info))


@cli.command()
@click.argument("student_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("datasets", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--int8", "int8_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="also an int8 dynamically quantised copy here")
@click.option("--version", default="student-1", show_default=True,
              help="aqmllm.version in the model's metadata")
def export(student_dir: Path, datasets: tuple[str, ...], out: Path, int8_out: Path | None,
           version: str) -> None:
    """The student as ONNX for aqmllmd, checked on held-out states of DATASETS.

    Parity between torch and ONNX Runtime within 1e-4, and the daemon's own validator."""
    from .student import export as run_export
    from .student import load as load_student

    student, info = load_student(student_dir)
    x = _steps(*datasets).features
    held = x[np.random.default_rng(0).choice(len(x), min(2000, len(x)), replace=False)]
    parity = run_export(student, out, f"AQM-LLM student distilled from the teacher in "
                        f"{info.get('teacher')}, conditioned on return "
                        f"{info.get('target_return', 0):.2f}", held, version=version)
    result = {"out": str(out), **parity}
    if int8_out is not None:
        result["int8"] = quantize_checked(out, int8_out, held)
    click.echo(json.dumps(result))


def quantize_checked(model: Path, out: Path, x: np.ndarray) -> dict:
    """int8 dynamic quantisation; its parity and argmax agreement on states x."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from aqmllmd.model import load as load_for_serving

    quantize_dynamic(str(model), str(out), weight_type=QuantType.QInt8)
    q = onnx.load(str(out))
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    onnx.helper.set_model_props(q, {**meta, contract.META_VERSION:
                                    meta.get(contract.META_VERSION, "") + "-int8"})
    onnx.save(q, str(out))
    out.chmod(0o644)
    a, b = load_for_serving(model).run(x), load_for_serving(out).run(x)
    return {"max_abs_diff": float(np.abs(a - b).max()),
            "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "bytes": {"float": model.stat().st_size, "int8": out.stat().st_size}}


@cli.command()
@_teacher_input
@click.option("--scenario", "scenarios", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="where the student drives (repeat for several)")
@click.option("--rounds", default=2, show_default=True)
@click.option("--max-windows", default=20000, show_default=True,
              help="states the teacher labels from the datasets")
@click.option("--max-visited", default=5000, show_default=True,
              help="visited states the teacher labels per scenario and round")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="the teacher's labels of the datasets from `distill` "
                                 "(STUDENT/labels.npz) instead of labelling them again")
@click.option("--epochs", default=10, show_default=True)
@_student_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="student directory; OUT/model.onnx is what drove the last round")
def dagger(teacher_dir: Path, datasets: tuple[str, ...], scenarios: tuple[str, ...],
           backbone: str | None, tiny: bool, rounds: int, max_windows: int, max_visited: int,
           labels: Path | None, epochs: int, hidden: int, prior: str, step_ms: float,
           teacher_weight: float, guard: str, queues: str, out: Path) -> None:
    """DAgger: the student drives the simulator, the teacher labels where it went.

    Round 0 distils on DATASETS; each round then runs every SCENARIO on ns-3 with the
    current student served by aqmllmd (policy llm), records the states it visited, has
    the teacher label them, and distils again on everything gathered. The rollouts run
    under the student's --guard."""
    _check_student_shape(prior, step_ms, teacher_weight, guard, queues)
    from .dagger import run_dagger

    try:
        log = run_dagger(teacher_dir, datasets, scenarios, out, backbone=backbone, tiny=tiny,
                         rounds=rounds, max_windows=max_windows, max_visited=max_visited,
                         labels=labels, epochs=epochs, hidden=hidden, prior=prior,
                         step_ms=step_ms, teacher_weight=teacher_weight, guard=guard,
                         queues=queues,
                         report=lambda r: click.echo(json.dumps(r)))
    except (ValueError, CheckpointError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps({"out": str(out), "rounds": log}))


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("datasets", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def quantize(model: Path, datasets: tuple[str, ...], out: Path) -> None:
    """int8 dynamic quantisation, with its parity and quality on the datasets' states."""
    click.echo(json.dumps(quantize_checked(model, out, _steps(*datasets).features)))


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("datasets", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
def evaluate(model: str, datasets: tuple[str, ...]) -> None:
    """Offline: macro-F1 and per-class recall of an exported MODEL against recorded actions.

    The closed-loop evaluation is `aqmllm-train closed-loop`."""
    from aqmllmd.model import load as load_for_serving

    from .train import classification_report

    steps = _steps(*datasets)
    probs = load_for_serving(model).run(steps.features)
    click.echo(json.dumps(classification_report(probs.argmax(1), steps.actions), indent=2))


@cli.command("closed-loop")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("scenarios", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--policies", default="dualpi2,pie,codel", show_default=True,
              help="baselines run beside the model (policy llm)")
@click.option("--seeds", default="1", show_default=True, help="comma-separated seeds")
@click.option("--jobs", default=2, show_default=True, help="baseline runs in parallel")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="results.json, table.md and figures here")
@click.option("--verdict-guard", type=click.Choice(contract.VERDICT_GUARDS), default=None,
              help="what DualPI2 still decides over the model's verdicts "
                   "[default: the model's own (its metadata), else each scenario's, dualpi2]")
@click.option("--baselines-from", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="an earlier results.json: its baseline rows for these "
                                 "scenarios and seeds are reused, not run again")
@click.option("--json", "as_json", is_flag=True)
def closed_loop_cmd(model: str, scenarios: tuple[str, ...], policies: str, seeds: str,
                    jobs: int, out: Path, verdict_guard: str | None,
                    baselines_from: Path | None, as_json: bool) -> None:
    """The model against baselines in closed loop on ns-3 (default: the held-out set).

    L4S and classic p99 sojourn, utilisation, Jain index and loss per scenario and
    policy, as a table (OUT/table.md) and figures."""
    from .closed_loop import HELD_OUT, evaluate_closed_loop, markdown_table

    names = [p.strip() for p in policies.split(",") if p.strip()]
    try:
        reuse = (json.loads(baselines_from.read_text())["rows"] if baselines_from else None)
        rows = evaluate_closed_loop(Path(model), [Path(s) for s in scenarios] or HELD_OUT,
                                    names, [int(x) for x in seeds.split(",")], out, jobs,
                                    verdict_guard, reuse)
    except (ValueError, RuntimeError, KeyError, json.JSONDecodeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(rows, indent=2) if as_json else markdown_table(rows))


@cli.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                default="models/recipe.toml")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("models/default"), show_default=True,
              help="model.onnx, its card (README.md) and the closed-loop results")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path("build/model"), show_default=True,
              help="datasets, teacher, student; stages already done there are skipped")
@click.option("--tiny", is_flag=True, help="a tiny random Llama teacher (smoke runs, tests)")
@click.option("--install/--no-install", default=False, show_default=True,
              help="ship it as aqmllmd's student.onnx (its packaged default is decided "
                   "on the sealed set: `sealed-test`)")
@click.option("--force-install", is_flag=True,
              help="with --install, make it aqmllmd's packaged default too, untested on "
                   "the sealed set")
@click.option("--until-export", is_flag=True,
              help="stop after the export and the offline evaluation (OUT/offline.json): "
                   "no closed loop, no card, nothing installed")
@click.option("--teacher-seed", type=click.IntRange(min=0), default=None,
              help="the teacher's training seed instead of the recipe's [teacher] seed: "
                   "an independent rebuild for the sealed test")
def pipeline(recipe: Path, out: Path, work: Path, tiny: bool, install: bool,
             force_install: bool, until_export: bool, teacher_seed: int | None) -> None:
    """Everything `make model` does: record, teacher, distill, DAgger, export, evaluate."""
    from .recipe import Pipeline, RecipeError

    try:
        model = Pipeline(recipe, out, work, tiny=tiny, install=install,
                         force_install=force_install, echo=click.echo,
                         until_export=until_export,
                         teacher=None if teacher_seed is None else {"seed": teacher_seed}
                         ).run()
    except (RecipeError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"model: {model}; card: {out / 'README.md'}")


if __name__ == "__main__":
    cli()
