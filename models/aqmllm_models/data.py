"""Training data from recorded datasets (sim/DATASET.md), through the one feature pipeline.

Each packet is a step: its features (aqmllmd.features, history carried in packet
order), the action taken (enqueue, drop, mark: the model's action order), a reward and
the return-to-go. Windows of K consecutive steps feed the return-conditioned teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aqm_bridge.abi import STATE_DTYPE
from aqmllmd import features

# Reward weights (models/README.md): delivered packets, queueing delay, loss, marks.
W_DELAY, W_LOSS, W_MARK, DELAY_REF_MS = 0.5, 2.0, 0.05, 15.0
GAMMA = 0.99


@dataclass
class Steps:
    features: np.ndarray  # float32 [N, F]
    actions: np.ndarray   # int64 [N]: 0 enqueue, 1 drop, 2 mark
    rewards: np.ndarray   # float32 [N]
    returns: np.ndarray   # float32 [N]: discounted return-to-go
    run_starts: np.ndarray  # int64: index where each run begins


def reward(action: np.ndarray, length: np.ndarray, sojourn_ns: np.ndarray) -> np.ndarray:
    """Delivered packets (in 1500-byte units), less delay against 15 ms, loss and marks."""
    delivered = (action != 1) * (length / 1500.0)
    delay = (action != 1) * (sojourn_ns / 1e6 / DELAY_REF_MS)
    return (delivered - W_DELAY * delay - W_LOSS * (action == 1)
            - W_MARK * (action == 2)).astype(np.float32)


def returns_to_go(r: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    out = np.empty_like(r)
    acc = 0.0
    for i in range(len(r) - 1, -1, -1):
        acc = r[i] + gamma * acc
        out[i] = acc
    return out


def from_columns(cols: dict[str, np.ndarray], run_sizes: list[int]) -> Steps:
    """Steps from dataset columns, runs in the order recorded."""
    feats, acts, rews, rets, starts = [], [], [], [], []
    begin = 0
    for size in run_sizes:
        idx = np.arange(begin, begin + size)
        idx = idx[np.argsort(cols["seq"][idx], kind="stable")]  # arrival order
        states = np.zeros(len(idx), STATE_DTYPE)
        for name in STATE_DTYPE.names:
            states[name] = cols[name][idx]
        starts.append(sum(len(a) for a in acts))
        feats.append(features.compute(states, features.History()))
        a = cols["action"][idx].astype(np.int64)
        r = reward(a, cols["len"][idx].astype(np.float64),
                   cols["packet_sojourn_ns"][idx].astype(np.float64))
        acts.append(a)
        rews.append(r)
        rets.append(returns_to_go(r))
        begin += size
    return Steps(np.concatenate(feats), np.concatenate(acts), np.concatenate(rews),
                 np.concatenate(rets), np.array(starts, np.int64))


def load(*paths: str | Path) -> Steps:
    """Steps of one or more recorded datasets (several behaviour policies, say), in order."""
    from aqmllm_sim.dataset import load_npz

    if not paths:
        raise ValueError("no dataset given")
    parts = []
    for path in paths:
        cols, meta = load_npz(path)
        parts.append(from_columns(cols, [r["recorded"] for r in meta["runs"]]))
    return concat(parts)


def concat(parts: list[Steps]) -> Steps:
    offsets = np.cumsum([0] + [len(p.actions) for p in parts[:-1]])
    return Steps(np.concatenate([p.features for p in parts]),
                 np.concatenate([p.actions for p in parts]),
                 np.concatenate([p.rewards for p in parts]),
                 np.concatenate([p.returns for p in parts]),
                 np.concatenate([p.run_starts + o for p, o in zip(parts, offsets, strict=True)]))


def windows(steps: Steps, k: int) -> np.ndarray:
    """Start indices of every K-step window that stays inside one run."""
    ends = np.append(steps.run_starts[1:], len(steps.actions))
    return np.concatenate([np.arange(s, e - k + 1) for s, e in zip(steps.run_starts, ends,
                                                                     strict=True)
                           if e - s >= k] or [np.zeros(0, np.int64)])
