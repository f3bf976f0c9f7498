"""`aqmllm-train`: teacher, distill, export, evaluate, lora-vs-full."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import click
import numpy as np


def _steps(dataset: str):  # noqa: ANN202
    from .data import load

    return load(dataset)


def _teacher(steps, backbone: str | None, tiny: bool, full: bool = False):  # noqa: ANN001, ANN202
    import torch

    from .teacher import L4SLM, load_backbone, tiny_llama, with_lora

    bb = tiny_llama(64) if tiny else load_backbone(backbone)
    d = bb.config.hidden_size
    if not full:
        bb = with_lora(bb)
    return L4SLM(bb, d, torch.tensor(steps.features.mean(0)),
                 torch.tensor(steps.features.std(0)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train the AQM-LLM teacher, distil the student, export it for aqmllmd."""


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.option("--backbone", default=None, help="HF model dir or GGUF file (default SmolLM2)")
@click.option("--tiny", is_flag=True, help="a tiny random Llama instead (tests, smoke runs)")
@click.option("--window", default=8, show_default=True)
@click.option("--epochs", default=1, show_default=True)
@click.option("--max-steps", default=None, type=int)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def teacher(dataset: str, backbone: str | None, tiny: bool, window: int, epochs: int,
            max_steps: int | None, lr: float, out: Path) -> None:
    """Return-conditioned offline RL on a recorded DATASET; saves adapters and heads."""
    import torch

    from .train import train_teacher

    steps = _steps(dataset)
    model = _teacher(steps, backbone, tiny)
    r = train_teacher(model, steps, k=window, epochs=epochs, lr=lr, max_steps=max_steps)
    out.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(out / "adapter")  # LoRA adapters, the Hugging Face way
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")},
               out / "heads.pt")
    (out / "train.json").write_text(json.dumps({**r, "dataset": dataset, "window": window,
                                                "tiny": tiny, "backbone": backbone}, indent=2))
    click.echo(json.dumps(r))


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
    model = _teacher(steps, backbone, tiny, full=full)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    r = train_teacher(model, steps, max_steps=n, progress=False, batch=8)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"trainable": trainable, "peak_rss_mb": peak,
                      "seconds_per_step": r["seconds_per_step"]}))


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.argument("teacher_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--backbone", default=None)
@click.option("--tiny", is_flag=True)
@click.option("--target-return-quantile", default=0.9, show_default=True,
              help="condition the teacher on this quantile of recorded returns")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--epochs", default=20, show_default=True)
def distill(dataset: str, teacher_dir: Path, backbone: str | None, tiny: bool,
            target_return_quantile: float, out: Path, epochs: int) -> None:
    """Distil the teacher into the student on recorded states; export it to ONNX."""
    from .student import Student, export
    from .student import distill as run_distill
    from .train import teacher_probs

    steps = _steps(dataset)
    model = _load_teacher(steps, teacher_dir, backbone, tiny)
    target = float(np.quantile(steps.returns, target_return_quantile))
    t0 = time.perf_counter()
    probs, idx = teacher_probs(model, steps, target_return=target)
    x = steps.features[idx]
    student = Student(steps.features.mean(0), steps.features.std(0))
    history = run_distill(student, x, probs, epochs=epochs)
    held = x[-min(1000, len(x)):]
    parity = export(student, out, f"AQM-LLM student distilled from the teacher in "
                    f"{teacher_dir}, conditioned on return {target:.2f}", held)
    click.echo(json.dumps({"kl_first": history[0], "kl_last": history[-1], **parity,
                           "seconds": time.perf_counter() - t0, "out": str(out)}))


def _load_teacher(steps, teacher_dir: Path, backbone: str | None, tiny: bool):  # noqa: ANN001, ANN202
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    model = _teacher(steps, backbone, tiny)
    set_peft_model_state_dict(model.backbone,
                              load_file(teacher_dir / "adapter" / "adapter_model.safetensors"))
    model.load_state_dict(torch.load(teacher_dir / "heads.pt"), strict=False)
    return model


@cli.command()
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False))
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.argument("teacher_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--backbone", default=None)
@click.option("--tiny", is_flag=True)
@click.option("--rounds", default=2, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def dagger(scenario: str, dataset: str, teacher_dir: Path, backbone: str | None, tiny: bool,
           rounds: int, out: Path) -> None:
    """DAgger: the student drives the simulator, the teacher labels where it went.

    Round 0 distils on DATASET; each round then runs SCENARIO on ns-3 with the current
    student served by aqmllmd (policy llm), records the states it visited, has the
    teacher label them, and distils again on everything gathered."""
    import dataclasses
    import tempfile

    from aqmllm_sim.dataset import flatten, load_rows
    from aqmllm_sim.runner import run
    from aqmllm_sim.scenario import load as load_scenario

    from .data import from_columns
    from .student import Student, export
    from .student import distill as run_distill
    from .train import teacher_probs

    steps = _steps(dataset)
    teacher = _load_teacher(steps, teacher_dir, backbone, tiny)
    target = float(np.quantile(steps.returns, 0.9))
    probs, idx = teacher_probs(teacher, steps, target_return=target)
    xs, ps = [steps.features[idx]], [probs]
    student = Student(steps.features.mean(0), steps.features.std(0))
    sc = load_scenario(scenario)
    log = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds + 1):
            run_distill(student, np.concatenate(xs), np.concatenate(ps), epochs=10)
            export(student, out, f"AQM-LLM student after DAgger round {rnd}",
                   np.concatenate(xs)[-500:])
            if rnd == rounds:
                break
            rows_path = Path(tmp, f"round-{rnd}.bin")
            r = run(dataclasses.replace(sc, seed=rnd + 1), "llm", model=str(out),
                    record=rows_path)
            rows = load_rows(rows_path)
            visited = from_columns(flatten(rows), [len(rows)])
            p, i = teacher_probs(teacher, visited, target_return=target)
            xs.append(visited.features[i])
            ps.append(p)
            log.append({"round": rnd, "visited": len(rows), "utilisation": r["utilisation"],
                        "l_p99_ms": r["sojourn_ms_l"]["p99"], "c_p99_ms": r["sojourn_ms_c"]["p99"]})
            click.echo(json.dumps(log[-1]))
    click.echo(json.dumps({"out": str(out), "states": int(sum(len(x) for x in xs)),
                           "rounds": log}))


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def quantize(model: Path, dataset: str, out: Path) -> None:
    """int8 dynamic quantisation, with its parity and quality on the dataset's states."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from aqmllmd.model import load as load_for_serving

    quantize_dynamic(str(model), str(out), weight_type=QuantType.QInt8)
    q = onnx.load(str(out))
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    onnx.helper.set_model_props(q, {**meta, "aqmllm.version": meta.get("aqmllm.version", "")
                                    + "-int8"})
    onnx.save(q, str(out))
    out.chmod(0o644)
    x = _steps(dataset).features
    a, b = load_for_serving(model).run(x), load_for_serving(out).run(x)
    click.echo(json.dumps({
        "max_abs_diff": float(np.abs(a - b).max()),
        "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "bytes": {"float": model.stat().st_size, "int8": out.stat().st_size}}))


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
def evaluate(dataset: str, model: str) -> None:
    """Macro-F1 and per-class recall of an exported MODEL against a dataset's actions."""
    from aqmllmd.model import load as load_for_serving

    from .train import classification_report

    steps = _steps(dataset)
    probs = load_for_serving(model).run(steps.features)
    click.echo(json.dumps(classification_report(probs.argmax(1), steps.actions), indent=2))
