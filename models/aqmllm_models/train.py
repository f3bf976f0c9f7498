"""Offline RL as return-conditioned sequence modelling, and its evaluation.

Most packets are enqueued, so the loss weighs each action by the inverse of its
frequency, and evaluation reports macro-F1 and per-class recall, never accuracy alone.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .data import Steps, windows
from .teacher import L4SLM


def class_weights(actions: np.ndarray, power: float = 1.0) -> torch.Tensor:
    """Inverse action frequency (power 1), or a milder power of it (0.5: its square root);
    the weights of present classes are normalised to a frequency-weighted mean of 1."""
    counts = np.bincount(actions, minlength=3).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1) / 3) ** power, 0.0)
    w /= (w * counts).sum() / counts.sum()
    return torch.tensor(w, dtype=torch.float32)


def calibrate(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Undo the class weighting: a model trained with weights w predicts p(a|s) * w_a
    (renormalised), so dividing by w gives back probabilities a policy can sample.
    Without this a sampled policy drops and marks as often as the weights inflate them."""
    w = np.asarray(weights, np.float64)
    p = np.where(w > 0, probs / np.where(w > 0, w, 1.0), 0.0)
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def batches(steps: Steps, starts: np.ndarray, k: int, size: int,
            rng: np.random.Generator, shard: tuple[int, int] = (0, 1),
            skip: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of windows in random order: this process's shard (index, count) of each
    batch, from batch number `skip` on (resuming)."""
    order = rng.permutation(starts)
    offs = np.arange(k)
    index, count = shard
    for i in range(skip * size, len(order), size):
        idx = order[i:i + size][index::count, None] + offs  # [B, K]
        if len(idx) == 0:
            continue
        x = torch.from_numpy(steps.features[idx])
        rtg = torch.from_numpy(steps.returns[idx])
        a = torch.from_numpy(steps.actions[idx])
        prev = torch.cat([torch.full_like(a[:, :1], 3), a[:, :-1]], dim=1)  # shifted
        yield rtg, x, prev, a


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
            if p.requires_grad}


def save_checkpoint(where: Path, model: nn.Module, opt: torch.optim.Optimizer,
                    progress: dict[str, Any]) -> None:
    """Trainable weights (safetensors), optimiser state and where training stands.

    Written beside and renamed into place, so a run killed mid-save keeps the last one."""
    from safetensors.torch import save_file

    tmp = where.with_name(where.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save(opt.state_dict(), tmp / "optimizer.pt")  # tensors only: weights_only loads it
    save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
    (tmp / "progress.json").write_text(json.dumps(progress))
    shutil.rmtree(where, ignore_errors=True)
    tmp.rename(where)


def load_checkpoint(where: Path, model: nn.Module,
                    opt: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    state = load_file(where / "trainable.safetensors")
    missing = set(trainable_state(model)) - set(state)
    if missing:
        raise ValueError(f"{where}: checkpoint of another model (missing {sorted(missing)[:3]})")
    model.load_state_dict(state, strict=False)
    opt.load_state_dict(torch.load(where / "optimizer.pt", weights_only=True))
    torch.set_rng_state(load_file(where / "rng.safetensors")["torch_rng"])
    return json.loads((where / "progress.json").read_text())


def train_teacher(model: L4SLM, steps: Steps, k: int = 8, epochs: int = 1, lr: float = 1e-3,
                  batch: int = 32, seed: int = 0, max_steps: int | None = None,
                  progress: bool = True, checkpoint: Path | None = None,
                  checkpoint_every: int = 50, resume: bool = False,
                  weight_power: float = 1.0) -> dict[str, Any]:
    """Train the trainable parameters (LoRA adapters, encoder, head); figures per step.

    Runs under accelerate: `accelerate launch` spreads it over GPUs or machines with no
    change (each process takes its shard of every batch; gradients are averaged), and
    on a plain CPU it is one process. With checkpoint, the state is saved there every
    checkpoint_every steps and at the end; resume continues from it exactly where it
    stopped (same batches, same order)."""
    from accelerate import Accelerator

    acc = Accelerator()
    torch.manual_seed(seed)
    starts = windows(steps, k)
    weights = class_weights(steps.actions, weight_power)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(acc.device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    done = {"step": 0, "epoch": 0, "batch": 0, "losses": []}
    if resume and checkpoint is not None and (checkpoint / "progress.json").is_file():
        done = load_checkpoint(checkpoint, model, opt)
    model, opt = acc.prepare(model, opt)
    model.train()
    losses: list[float] = done["losses"]
    n, t0, timed = done["step"], time.perf_counter(), 0
    per_epoch = (len(starts) + batch - 1) // batch
    total = min(per_epoch * epochs, max_steps or per_epoch * epochs)
    bar = tqdm(total=total, initial=n, disable=not progress or not acc.is_main_process,
               desc="teacher")
    stop = n >= total
    position = {"epoch": epochs, "batch": 0}  # where a resumed run starts; all done
    for epoch in range(done["epoch"], epochs):
        if stop:
            break
        rng = np.random.default_rng([seed, epoch])  # the epoch's order, again on resume
        skip = done["batch"] if epoch == done["epoch"] else 0
        for b, (rtg, x, prev, a) in enumerate(
                batches(steps, starts, k, batch, rng, (acc.process_index, acc.num_processes),
                        skip), start=skip):
            rtg, x, prev, a = (t.to(acc.device) for t in (rtg, x, prev, a))
            logits = model(rtg, x, prev)
            loss = loss_fn(logits.reshape(-1, 3), a.reshape(-1))
            opt.zero_grad()
            acc.backward(loss)
            opt.step()
            losses.append(float(loss.detach()))
            n, timed = n + 1, timed + 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            at = {"step": n, "epoch": epoch, "batch": b + 1, "losses": losses}
            if checkpoint is not None and n % checkpoint_every == 0 and acc.is_main_process:
                save_checkpoint(checkpoint, acc.unwrap_model(model), opt, at)
            if n >= total:
                stop = True
                position = {"epoch": epoch, "batch": b + 1}
                break
    bar.close()
    if checkpoint is not None and acc.is_main_process and timed:
        save_checkpoint(checkpoint, acc.unwrap_model(model), opt,
                        {"step": n, **position, "losses": losses})
    if not losses:
        raise ValueError("no training step ran: the dataset has no window of that length")
    return {"steps": n, "first_loss": losses[0], "last_loss": losses[-1],
            "seconds_per_step": (time.perf_counter() - t0) / max(timed, 1),
            "class_weights": weights.tolist(), "processes": acc.num_processes,
            "device": str(acc.device), "losses": losses}


@torch.no_grad()
def teacher_probs(model: L4SLM, steps: Steps, k: int = 8, target_return: float | None = None,
                  batch: int = 64, max_windows: int | None = None, seed: int = 0,
                  weights: np.ndarray | None = None,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's distribution at the last step of each window, and that step's index.

    With target_return, every window is conditioned on that return-to-go instead of the
    one recorded: the behaviour the return condition selects. With max_windows, a random
    subset of that many windows (the backbone's forward pass is the cost). With weights
    (the training's class weights), the distributions are calibrated for sampling."""
    model.eval()
    device = next(model.parameters()).device
    starts = windows(steps, k)
    if max_windows is not None and len(starts) > max_windows:
        starts = np.sort(np.random.default_rng(seed).choice(starts, max_windows, replace=False))
    out = []
    offs = np.arange(k)
    for i in tqdm(range(0, len(starts), batch), disable=not progress, desc="teacher labels"):
        idx = starts[i:i + batch, None] + offs
        rtg = torch.from_numpy(steps.returns[idx])
        if target_return is not None:
            rtg = torch.full_like(rtg, target_return)
        a = torch.from_numpy(steps.actions[idx])
        prev = torch.cat([torch.full_like(a[:, :1], 3), a[:, :-1]], dim=1)
        logits = model(rtg.to(device), torch.from_numpy(steps.features[idx]).to(device),
                       prev.to(device))
        out.append(torch.softmax(logits[:, -1].float(), dim=-1).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, 3), np.float32)
    if weights is not None:
        probs = calibrate(probs, weights)
    return probs, starts + k - 1


def classification_report(pred: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    """Per-class recall and precision, and macro-F1 over the classes present."""
    names = ("enqueue", "drop", "mark")
    recall: dict[str, float | None] = {}
    f1s = []
    for c, name in enumerate(names):
        tp = int(((pred == c) & (truth == c)).sum())
        support = int((truth == c).sum())
        predicted = int((pred == c).sum())
        r = tp / support if support else None
        p = tp / predicted if predicted else 0.0
        recall[name] = r
        if r is not None:
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return {"macro_f1": float(np.mean(f1s)) if f1s else None, "recall": recall,
            "support": {n: int((truth == c).sum()) for c, n in enumerate(names)}}
