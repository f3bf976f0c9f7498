"""`aqmllm-train ablation`: what does the pretrained language model add to the teacher?

The teacher (teacher.L4SLM: state encoder, backbone, L4S-LM head) is trained on the same
data, for the same steps, with the same seeds and settings, over the backbones of
backbones.py: pretrained (SmolLM2-135M + LoRA, what the recipe trains), random (the same
architecture randomly initialised, the same LoRA), none, gru, and constant.

Each (backbone, seed) trains in its own child process, so its peak resident memory
(ru_maxrss) is its own (on a GPU, torch's peak allocation is recorded too). Evaluation
is on the windows of a held-out recording (another seed): the prediction at each
window's last step, conditioned on the recorded return-to-go. Up to --eval-windows // 3
windows per action, drawn once for every run:

- balanced NLL: the mean over actions of the mean negative log-likelihood of the true
  action, on the raw output (the one training's class-weighted loss fits);
- one-vs-rest AUC per action, on the raw output;
- expected calibration error (top label, 15 bins) of the calibrated output (the class
  weights divided out: what distillation uses), each window weighted back to the
  held-out recording's own action mix.

A run whose result is in --out with the same settings is not run again: a stopped
ablation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from .backbones import BACKBONES, build

ACTIONS = ("enqueue", "drop", "mark")
ECE_BINS = 15
METRICS = ("balanced_nll", "auc_enqueue", "auc_drop", "auc_mark", "ece")


# ---------------------------------------------------------------------------------------
# Metrics


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None for one class."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    avg_rank = upper - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    ranks = avg_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ece(probs: np.ndarray, truth: np.ndarray, weight: np.ndarray,
         bins: int = ECE_BINS) -> float:
    """Top-label expected calibration error, windows weighted."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == truth).astype(np.float64)
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total, err = weight.sum(), 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            w = weight[m]
            err += abs(np.average(correct[m], weights=w) - np.average(conf[m], weights=w)) \
                * w.sum() / total
    return float(err)


def metrics(raw: np.ndarray, calibrated: np.ndarray, truth: np.ndarray,
            weight: np.ndarray) -> dict[str, float | None]:
    """Balanced NLL and per-action AUC on the raw output; ECE on the calibrated one."""
    p = np.clip(raw.astype(np.float64), 1e-12, 1.0)
    nll = [float(-np.log(p[truth == c, c]).mean()) for c in range(3) if (truth == c).any()]
    out: dict[str, float | None] = {"balanced_nll": float(np.mean(nll))}
    for c, name in enumerate(ACTIONS):
        out[f"auc_{name}"] = _auc(raw[:, c], truth == c)
    out["ece"] = _ece(calibrated.astype(np.float64), truth, weight)
    return out


def pick_eval_windows(steps: Any, k: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Window starts, up to n // 3 per action at the last step, and each one's weight
    back to the recording's own action mix."""
    from .data import windows

    starts = windows(steps, k)
    last = steps.actions[starts + k - 1]
    rng = np.random.default_rng(seed)
    chosen, weights = [], []
    for c in range(3):
        pool = starts[last == c]
        if len(pool) == 0:
            continue
        take = np.sort(rng.choice(pool, min(len(pool), max(n // 3, 1)), replace=False))
        chosen.append(take)
        weights.append(np.full(len(take), len(pool) / len(take)))
    order = np.argsort(np.concatenate(chosen))
    return np.concatenate(chosen)[order], np.concatenate(weights)[order]


def predict(model: Any, steps: Any, starts: np.ndarray, k: int, batch: int = 64,
            progress: bool = False) -> np.ndarray:
    """The raw distribution at each window's last step, on the recorded returns."""
    import torch
    from tqdm import tqdm

    model.eval()
    device = next(model.parameters()).device  # where training left it (a GPU if any)
    offs = np.arange(k)
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(starts), batch), disable=not progress, desc="held-out",
                      leave=False):
            idx = starts[i:i + batch, None] + offs
            a = torch.from_numpy(steps.actions[idx])
            prev = torch.cat([torch.full_like(a[:, :1], 3), a[:, :-1]], dim=1)
            logits = model(torch.from_numpy(steps.returns[idx]).to(device),
                           torch.from_numpy(steps.features[idx]).to(device), prev.to(device))
            out.append(torch.softmax(logits[:, -1].float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


# ---------------------------------------------------------------------------------------
# One run, in its own process


def _save_steps(steps: Any, path: Path, **extra: np.ndarray) -> None:
    np.savez(path, features=steps.features, actions=steps.actions, rewards=steps.rewards,
             returns=steps.returns, run_starts=steps.run_starts, **extra)


def _load_steps(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    from .data import Steps

    z = dict(np.load(path))
    steps = Steps(z.pop("features"), z.pop("actions"), z.pop("rewards"), z.pop("returns"),
                  z.pop("run_starts"))
    return steps, z


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(spec_path: Path) -> dict[str, Any]:
    """Train and evaluate one (backbone, seed) as spec.json says; writes result.json."""
    import torch

    from .train import calibrate, class_weights, train_teacher

    spec = json.loads(spec_path.read_text())
    t0 = time.perf_counter()
    train, _ = _load_steps(Path(spec["train"]))
    held, ev = _load_steps(Path(spec["heldout"]))
    import accelerate  # noqa: F401  (every run's baseline holds the same libraries)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    base_mb = _rss_mb()  # the data and libraries: the delta is the model and training
    model = build(spec["backbone"], train, spec["seed"], spec["backbone_path"], spec["tiny"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    r = train_teacher(model, train, k=spec["window"], lr=spec["lr"], batch=spec["batch"],
                      seed=spec["seed"], max_steps=spec["steps"], progress=spec["progress"],
                      weight_power=spec["weight_power"])
    t1 = time.perf_counter()
    raw = predict(model, held, ev["starts"], spec["window"], progress=spec["progress"])
    truth = held.actions[ev["starts"] + spec["window"] - 1]
    weights = class_weights(train.actions, spec["weight_power"]).numpy()
    m = metrics(raw, calibrate(raw, weights), truth, ev["weights"])
    losses = r["losses"]
    result = {
        "backbone": spec["backbone"], "seed": spec["seed"], "steps": r["steps"],
        "trainable_params": trainable, "frozen_params": frozen,
        "seconds_per_step": r["seconds_per_step"], "eval_seconds": time.perf_counter() - t1,
        "run_seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb(),
        "peak_rss_delta_mb": _rss_mb() - base_mb, "torch_threads": torch.get_num_threads(),
        "gpu_peak_mb": (torch.cuda.max_memory_allocated() / 2**20
                        if torch.cuda.is_available() else None),
        "first_loss": losses[0], "last20_loss": float(np.mean(losses[-20:])),
        "eval_windows": int(len(truth)),
        "eval_support": {a: int((truth == c).sum()) for c, a in enumerate(ACTIONS)},
        **m, "spec_hash": spec["hash"],
    }
    (spec_path.parent / "result.json").write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------------------------------
# Summary


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = np.array(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else math.nan)


def summarise(runs: list[dict[str, Any]], backbones: list[str]) -> dict[str, Any]:
    keys = ("seconds_per_step", "peak_rss_mb", "peak_rss_delta_mb", *METRICS, "last20_loss")
    out: dict[str, Any] = {}
    for b in backbones:
        mine = [r for r in runs if r["backbone"] == b]
        if not mine:
            continue
        row: dict[str, Any] = {"seeds": [r["seed"] for r in mine],
                               "trainable_params": mine[0]["trainable_params"],
                               "frozen_params": mine[0]["frozen_params"]}
        for k in keys:
            vals = [r[k] for r in mine if r.get(k) is not None]
            if vals:
                row[k] = {**dict(zip(("mean", "sd"), _mean_sd(vals), strict=True)),
                          "min": float(min(vals))}
        out[b] = row
    return out


def _fmt(cell: dict[str, float] | None, digits: int, least: bool = False) -> str:
    if cell is None:
        return "n/a"
    sd = "" if math.isnan(cell["sd"]) else f" ± {cell['sd']:.{digits}f}"
    low = f" (min {cell['min']:.{digits}f})" if least else ""
    return f"{cell['mean']:.{digits}f}{sd}{low}"


def table(summary: dict[str, Any]) -> str:
    """Markdown: mean ± standard deviation across seeds per backbone; the time per step
    also as its least value (on a shared host, the run least slowed by others)."""
    head = ("| backbone | seeds | trainable / frozen params | s/step | peak RSS MB (run's own)"
            " | balanced NLL | AUC enqueue | AUC drop | AUC mark | ECE | train loss (last 20) |")
    lines = [head, "|" + "---|" * 11]
    for b, row in summary.items():
        lines.append(
            f"| {b} | {len(row['seeds'])} | {row['trainable_params']:,} / "
            f"{row['frozen_params']:,} | {_fmt(row.get('seconds_per_step'), 3, least=True)} | "
            f"{_fmt(row.get('peak_rss_mb'), 0)} ({_fmt(row.get('peak_rss_delta_mb'), 0)}) | "
            f"{_fmt(row.get('balanced_nll'), 3)} | {_fmt(row.get('auc_enqueue'), 3)} | "
            f"{_fmt(row.get('auc_drop'), 3)} | {_fmt(row.get('auc_mark'), 3)} | "
            f"{_fmt(row.get('ece'), 3)} | {_fmt(row.get('last20_loss'), 3)} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], backbones: list[str], path: Path) -> bool:
    """Balanced NLL and mean AUC of every run, per backbone (False without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for i, b in enumerate(backbones):
        mine = [r for r in runs if r["backbone"] == b]
        x = np.full(len(mine), i) + np.linspace(-0.1, 0.1, len(mine))
        axes[0].plot(x, [r["balanced_nll"] for r in mine], "o")
        aucs = [np.mean([r[f"auc_{a}"] for a in ACTIONS if r[f"auc_{a}"] is not None])
                for r in mine]
        axes[1].plot(x, aucs, "o")
    for ax, label in zip(axes, ("held-out balanced NLL (lower is better)",
                                "held-out mean one-vs-rest AUC"), strict=True):
        ax.set_xticks(range(len(backbones)), backbones)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------
# The command


def _load(paths: tuple[str, ...], returns: str) -> Any:
    from .data import load

    try:
        return load(*paths, returns=returns)
    except ValueError as e:
        raise click.UsageError(str(e)) from e


@click.command("ablation")
@click.argument("datasets", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--heldout", "heldout", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="held-out recording(s), another seed (repeat the option for several)")
@click.option("--backbones", default=",".join(BACKBONES), show_default=True,
              help="comma-separated, among " + ", ".join(BACKBONES))
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated")
@click.option("--steps", "n_steps", default=300, show_default=True,
              help="training steps, the same for every run")
@click.option("--batch", default=16, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--window", default=8, show_default=True)
@click.option("--weight-power", default=1.0, show_default=True)
@click.option("--returns", type=click.Choice(["packet", "interval"]), default="interval",
              show_default=True, help="as `teacher --returns` (the recipe's: interval)")
@click.option("--train-fraction", default=1.0, show_default=True,
              type=click.FloatRange(0, 1, min_open=True),
              help="train on the first FRACTION of every recorded run (data scaling)")
@click.option("--eval-windows", default=1500, show_default=True,
              help="held-out windows, up to a third of them per action")
@click.option("--backbone", "backbone_path", default=None,
              help="HF model dir or GGUF file for pretrained/random (default SmolLM2)")
@click.option("--tiny", is_flag=True,
              help="the tests' tiny random Llama for pretrained and random (no pretraining)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="print results JSON, not the table")
def ablation(datasets: tuple[str, ...], heldout: tuple[str, ...], backbones: str, seeds: str,
             n_steps: int, batch: int, lr: float, window: int, weight_power: float,
             returns: str, train_fraction: float, eval_windows: int,
             backbone_path: str | None, tiny: bool,
             out: Path, as_json: bool) -> None:
    """Train the teacher with each backbone and seed on DATASETS; compare on --heldout.

    Writes OUT/results.json, OUT/table.md, OUT/ablation.png and one directory per run."""
    kinds = [b.strip() for b in backbones.split(",") if b.strip()]
    bad = [b for b in kinds if b not in BACKBONES]
    if bad or not kinds:
        raise click.UsageError(f"--backbones: {bad or backbones!r}; choose among "
                               + ", ".join(BACKBONES))
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train = _load(datasets, returns)
    if train_fraction < 1:
        from .data import run_prefixes

        train = run_prefixes(train, train_fraction)
    held = _load(heldout, returns)
    starts, weights = pick_eval_windows(held, window, eval_windows)
    if len(starts) == 0:
        raise click.UsageError("--heldout: no window of that length")
    _save_steps(train, out / "train-steps.npz")
    _save_steps(held, out / "heldout-steps.npz", starts=starts, weights=weights)
    settings = {"datasets": list(datasets), "heldout": list(heldout), "steps": n_steps,
                "batch": batch, "lr": lr, "window": window, "weight_power": weight_power,
                "returns": returns, "eval_windows": eval_windows,
                **({"train_fraction": train_fraction} if train_fraction < 1 else {}),
                "backbone_path": backbone_path, "tiny": tiny}
    plan = [(b, s) for s in seed_list for b in kinds]  # every backbone of a seed, in turn
    runs: list[dict[str, Any]] = []
    with click.progressbar(plan, label="ablation runs", file=sys.stderr,
                           item_show_func=lambda p: p and f"{p[0]} seed {p[1]}") as bar:
        for kind, seed in bar:
            runs.append(_run(out, settings, kind, seed))
    summary = summarise(runs, kinds)
    md = table(summary)
    results = {"settings": settings,
               "wall_seconds": time.perf_counter() - t_start,  # this invocation's
               "runs_seconds": sum(r["run_seconds"] for r in runs),  # when each ran
               "train_steps_packets": int(len(train.actions)),
               "train_actions": {a: int((train.actions == c).sum())
                                 for c, a in enumerate(ACTIONS)},
               "heldout_packets": int(len(held.actions)),
               "runs": runs, "summary": summary}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "table.md").write_text(md)
    plot(runs, kinds, out / "ablation.png")
    click.echo(json.dumps(results, indent=2) if as_json else md, nl=False)


def _run(out: Path, settings: dict[str, Any], kind: str, seed: int) -> dict[str, Any]:
    """One run in a child process, or its result if the same run is already there."""
    run_dir = out / "runs" / f"{kind}-seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps({**settings, "backbone": kind, "seed": seed},
                                       sort_keys=True).encode()).hexdigest()[:16]
    done = run_dir / "result.json"
    if done.is_file():
        prev = json.loads(done.read_text())
        if prev.get("spec_hash") == digest:
            return prev
    spec = {**settings, "backbone": kind, "seed": seed, "hash": digest,
            "train": str(out / "train-steps.npz"), "heldout": str(out / "heldout-steps.npz"),
            "progress": True}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=2))
    log = run_dir / "log.txt"
    # Its progress bars go to the terminal if there is one, else to its log.
    with log.open("w") as f:
        r = subprocess.run([sys.executable, "-m", "aqmllm_models.ablation",
                            str(run_dir / "spec.json")], stdout=f,
                           stderr=None if sys.stderr.isatty() else f)
    if r.returncode != 0:
        raise click.ClickException(f"{kind} seed {seed} failed (exit {r.returncode}):\n"
                                   + log.read_text()[-3000:])
    return json.loads(done.read_text())


if __name__ == "__main__":
    run_one(Path(sys.argv[1]))
