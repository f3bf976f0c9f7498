"""Training data from recorded datasets (sim/DATASET.md), through the one feature pipeline.

Each packet is a step: its features (aqmllmd.features, history carried in packet
order), the action taken (enqueue, drop, mark: the model's action order), a reward and
the return-to-go. Windows of K consecutive steps feed the return-conditioned teacher.

Two kinds of return (models/README.md, "Interval returns"):
- `packet`: a reward per packet, discounted per packet (γ = 0.99);
- `interval`: a score per 100 ms interval of the run (utilisation, fairness, log p99
  sojourn of each queue) minus DualPI2's score in the same interval of the same scenario
  and seed, discounted per interval (γ = 0.9, about a second ahead). Each packet takes
  the return of the interval it arrived in. It compares policies within a scenario, and
  it values what the promotion gate values: the link first, then both tails.
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
RETURN_KINDS = ("packet", "interval")

# Interval score weights: one point of utilisation (1 %) is worth 0.2, as much as a 33 %
# lower p99 in one queue for that interval; the p99s count from a floor, below which a
# lower tail is worth nothing to anyone.
W_UTIL, W_JAIN, W_TAIL = 20.0, 2.0, 0.5
TAIL_FLOOR_MS = {"c": 1.0, "l": 0.25}
INTERVAL_GAMMA = 0.9


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


def from_columns(cols: dict[str, np.ndarray], run_sizes: list[int],
                 advantages: list[np.ndarray] | None = None,
                 interval_s: float = 0.1) -> Steps:
    """Steps from dataset columns, runs in the order recorded.

    With advantages (one array per run: each interval's score less DualPI2's, see
    `interval_scores`), a packet's reward is the advantage of the interval it arrived in
    and its return that interval's discounted return (γ = 0.9 per interval); otherwise
    the per-packet reward and its discounted return."""
    feats, acts, rews, rets, starts = [], [], [], [], []
    begin = 0
    for run, size in enumerate(run_sizes):
        idx = np.arange(begin, begin + size)
        idx = idx[np.argsort(cols["seq"][idx], kind="stable")]  # arrival order
        states = np.zeros(len(idx), STATE_DTYPE)
        for name in STATE_DTYPE.names:
            states[name] = cols[name][idx]
        starts.append(sum(len(a) for a in acts))
        feats.append(features.compute(states, features.History()))
        a = cols["action"][idx].astype(np.int64)
        if advantages is None:
            r = reward(a, cols["len"][idx].astype(np.float64),
                       cols["packet_sojourn_ns"][idx].astype(np.float64))
            g = returns_to_go(r)
        else:
            adv = advantages[run].astype(np.float32)
            k = np.minimum(cols["ts_ns"][idx] // int(interval_s * 1e9),
                           len(adv) - 1).astype(np.int64)
            r, g = adv[k], returns_to_go(adv, INTERVAL_GAMMA)[k]
        acts.append(a)
        rews.append(r)
        rets.append(g)
        begin += size
    return Steps(np.concatenate(feats), np.concatenate(acts), np.concatenate(rews),
                 np.concatenate(rets), np.array(starts, np.int64))


def interval_scores(cols: dict[str, np.ndarray], run: int) -> np.ndarray:
    """One score per 100 ms interval of a run, from the recorded time series (ts_*):
    W_UTIL * utilisation + W_JAIN * Jain index over the flows - W_TAIL * the log of each
    queue's p99 sojourn (from its floor)."""
    mine = cols["ts_run"] == run
    link, cap = cols["ts_link_mbps"][mine], cols["ts_capacity_mbps"][mine]
    util = np.clip(np.where(cap > 0, link / np.maximum(cap, 1e-9), 1.0), 0.0, 1.0)
    flows = [n for n in cols if n.startswith("ts_tput_mbps_")
             and np.isfinite(cols[n][mine]).all()]
    tput = np.stack([cols[n][mine] for n in flows], axis=1) if flows else np.ones((len(util), 1))
    sq = (tput ** 2).sum(axis=1)
    jain = np.where(sq > 0, tput.sum(axis=1) ** 2 / (tput.shape[1] * np.maximum(sq, 1e-12)),
                    1.0)
    tail = np.zeros(len(util))
    for q, floor in TAIL_FLOOR_MS.items():
        p99 = np.nan_to_num(cols[f"ts_sojourn_p99_ms_{q}"][mine], nan=0.0)
        tail += np.log(np.maximum(p99, floor) / floor)
    return W_UTIL * util + W_JAIN * jain - W_TAIL * tail


def _is_baseline(meta: dict) -> bool:
    return meta.get("behaviour_policy") == "dualpi2" and bool(meta.get("dualpi2_default"))


def load(*paths: str | Path, returns: str = "packet") -> Steps:
    """Steps of one or more recorded datasets (several behaviour policies, say), in order.

    returns="interval" makes every run's returns relative to DualPI2's: among the
    datasets there must be, for every scenario and seed, a recording of DualPI2 with the
    scenario's own parameters (`aqmllm-sim record` without --target-us or
    --step-threshold-us)."""
    from aqmllm_sim.dataset import load_npz

    if not paths:
        raise ValueError("no dataset given")
    if returns not in RETURN_KINDS:
        raise ValueError(f"returns: {returns!r} is not one of {', '.join(RETURN_KINDS)}")
    loaded = [(str(path), *load_npz(path)) for path in paths]
    if returns == "packet":
        return concat([from_columns(cols, [r["recorded"] for r in meta["runs"]])
                       for _path, cols, meta in loaded])
    scores = [[interval_scores(cols, i) for i in range(len(meta["runs"]))]
              for _path, cols, meta in loaded]
    baselines: dict[tuple[str, int], np.ndarray] = {}
    for (_path, _cols, meta), run_scores in zip(loaded, scores, strict=True):
        if _is_baseline(meta):
            for r, score in zip(meta["runs"], run_scores, strict=True):
                baselines.setdefault((meta["scenario"], r["seed"]), score)
    parts = []
    for (path, cols, meta), run_scores in zip(loaded, scores, strict=True):
        adv = []
        for r, score in zip(meta["runs"], run_scores, strict=True):
            base = baselines.get((meta["scenario"], r["seed"]))
            if base is None:
                raise ValueError(f"{path}: no DualPI2 recording of scenario "
                                 f"{meta['scenario']!r}, seed {r['seed']} among the datasets "
                                 "(interval returns are relative to it)")
            n = min(len(score), len(base))  # intervals both runs have
            adv.append(score[:n] - base[:n])
        parts.append(from_columns(cols, [r["recorded"] for r in meta["runs"]], adv,
                                  float(meta.get("interval_s", 0.1))))
    return concat(parts)


def concat(parts: list[Steps]) -> Steps:
    offsets = np.cumsum([0] + [len(p.actions) for p in parts[:-1]])
    return Steps(np.concatenate([p.features for p in parts]),
                 np.concatenate([p.actions for p in parts]),
                 np.concatenate([p.rewards for p in parts]),
                 np.concatenate([p.returns for p in parts]),
                 np.concatenate([p.run_starts + o for p, o in zip(parts, offsets, strict=True)]))


def run_prefixes(steps: Steps, fraction: float) -> Steps:
    """The first `fraction` of every run (at least one packet each): less data of the
    same kind, for scaling studies. Returns-to-go stay those of the whole run."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}: want 0 < fraction <= 1")
    ends = np.append(steps.run_starts[1:], len(steps.actions))
    keep = [np.arange(s, s + max(1, int(np.ceil(fraction * (e - s)))))
            for s, e in zip(steps.run_starts, ends, strict=True) if e > s]
    idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    starts = np.cumsum([0] + [len(k) for k in keep[:-1]]).astype(np.int64)
    return Steps(steps.features[idx], steps.actions[idx], steps.rewards[idx],
                 steps.returns[idx], starts)


def windows(steps: Steps, k: int) -> np.ndarray:
    """Start indices of every K-step window that stays inside one run."""
    ends = np.append(steps.run_starts[1:], len(steps.actions))
    return np.concatenate([np.arange(s, e - k + 1) for s, e in zip(steps.run_starts, ends,
                                                                     strict=True)
                           if e - s >= k] or [np.zeros(0, np.int64)])
