"""Offline RL as return-conditioned sequence modelling, and its evaluation.

Most packets are enqueued, so the loss weighs each action by the inverse of its
frequency, and evaluation reports macro-F1 and per-class recall, never accuracy alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .data import Steps, windows
from .teacher import L4SLM


def class_weights(actions: np.ndarray) -> torch.Tensor:
    counts = np.bincount(actions, minlength=3).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / 3, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def batches(steps: Steps, starts: np.ndarray, k: int, size: int,
            rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
    order = rng.permutation(starts)
    offs = np.arange(k)
    for i in range(0, len(order), size):
        idx = order[i:i + size, None] + offs  # [B, K]
        x = torch.from_numpy(steps.features[idx])
        rtg = torch.from_numpy(steps.returns[idx])
        a = torch.from_numpy(steps.actions[idx])
        prev = torch.cat([torch.full_like(a[:, :1], 3), a[:, :-1]], dim=1)  # shifted
        yield rtg, x, prev, a


def train_teacher(model: L4SLM, steps: Steps, k: int = 8, epochs: int = 1, lr: float = 1e-3,
                  batch: int = 32, seed: int = 0, max_steps: int | None = None,
                  progress: bool = True) -> dict[str, float]:
    """Train the trainable parameters (LoRA adapters, encoder, head); figures per step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    starts = windows(steps, k)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(steps.actions))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses, n, t0 = [], 0, time.perf_counter()
    for _ in range(epochs):
        for rtg, x, prev, a in tqdm(batches(steps, starts, k, batch, rng), disable=not progress,
                                    total=(len(starts) + batch - 1) // batch, desc="teacher"):
            logits = model(rtg, x, prev)
            loss = loss_fn(logits.reshape(-1, 3), a.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            n += 1
            if max_steps is not None and n >= max_steps:
                break
    return {"steps": n, "first_loss": losses[0], "last_loss": losses[-1],
            "seconds_per_step": (time.perf_counter() - t0) / max(n, 1)}


@torch.no_grad()
def teacher_probs(model: L4SLM, steps: Steps, k: int = 8, target_return: float | None = None,
                  batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's distribution at the last step of each window, and that step's index.

    With target_return, every window is conditioned on that return-to-go instead of the
    one recorded: the behaviour the return condition selects."""
    model.eval()
    starts = windows(steps, k)
    out = []
    offs = np.arange(k)
    for i in range(0, len(starts), batch):
        idx = starts[i:i + batch, None] + offs
        rtg = torch.from_numpy(steps.returns[idx])
        if target_return is not None:
            rtg = torch.full_like(rtg, target_return)
        a = torch.from_numpy(steps.actions[idx])
        prev = torch.cat([torch.full_like(a[:, :1], 3), a[:, :-1]], dim=1)
        logits = model(rtg, torch.from_numpy(steps.features[idx]), prev)
        out.append(torch.softmax(logits[:, -1], dim=-1).numpy())
    return np.concatenate(out), starts + k - 1


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
