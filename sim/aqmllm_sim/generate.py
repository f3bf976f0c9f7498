"""Randomised scenarios for recording training data, seeded and reproducible.

`aqmllm-sim generate --seed N --count K --out DIR` writes K scenario files. Scenario i
of seed N depends on (N, i) only, so a larger count extends a smaller one. Each draws:

- a capacity process: a constant rate or rate steps (log-uniform over 2-200 Mbit/s),
  a training trace (sim/traces/train/, never a held-out or sealed one), or a random
  walk written as a new Mahimahi trace beside the scenario;
- 1-16 bulk flows: DCTCP, CUBIC or Reno, classic flows with ECN (80 %) or Not-ECT,
  some starting late; base RTTs log-uniform over 5-300 ms, one RTT for all flows half
  the time;
- sometimes Poisson short transfers, random loss (1e-4 to 1e-2) and on/off UDP cross
  traffic (5-30 % of the capacity);
- a duration that keeps a run near TARGET_PACKETS packets (5-40 s).

The held-out traces (sim/traces/held-out/) and the sealed test's (sim/traces/sealed/)
are refused, by path and by content: the generator replays only sim/traces/train/, and
a file there equal to one of theirs stops it.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

from .scenario import load
from .traces import mahimahi_text, mean_mbps, opportunities

TRACES = Path(__file__).resolve().parents[1] / "traces"
TRAIN_TRACES = TRACES / "train"
HELD_OUT_TRACES = TRACES / "held-out"
#: The sealed test's traces (sim/scenarios/sealed/README.md): never trained on.
SEALED_TRACES = TRACES / "sealed"
RATE_MBPS = (2.0, 200.0)
RTT_MS = (5.0, 300.0)
MAX_FLOWS = 16
TARGET_PACKETS = 60_000
DURATION_S = (5.0, 40.0)
CAPACITY = ("constant", "steps", "trace", "walk")


class GenerateError(Exception):
    pass


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def training_traces() -> list[Path]:
    """The traces the generator may replay: sim/traces/train/, none equal to a held-out
    or a sealed trace (a copy under another name would leak it into training)."""
    kept = {p.read_bytes(): kind for kind, d in (("held-out", HELD_OUT_TRACES),
                                                 ("sealed", SEALED_TRACES))
            for p in d.glob("*.mahimahi")}
    out = sorted(TRAIN_TRACES.glob("*.mahimahi"))
    for p in out:
        kind = kept.get(p.read_bytes())
        if kind is not None:
            raise GenerateError(f"{p} is also a {kind} trace")
    if not out:
        raise GenerateError(f"no training trace in {TRAIN_TRACES}")
    return out


def _walk(rng: random.Random, mean: float, seconds: int) -> list[tuple[float, float]]:
    """A capacity random walk (log scale, 0.5 s steps) around mean, within 2-200."""
    lo, hi = RATE_MBPS
    x, out = math.log(mean), []
    for k in range(seconds * 2):
        x += rng.gauss(0, 0.25) + 0.1 * (math.log(mean) - x)
        out.append((k / 2, min(hi, max(lo, math.exp(x)))))
    out.append((float(seconds), out[-1][1]))
    return out


def draw(seed: int, index: int, out: Path) -> dict[str, Any]:
    """Scenario `index` of `seed` as a TOML-ready dict (a walk trace is written to
    out/traces/)."""
    rng = random.Random(seed * 1_000_003 + index)
    name = f"gen-{seed}-{index:03d}"
    sc: dict[str, Any] = {"name": name, "seed": 1 + rng.randrange(10_000)}
    kind = rng.choice(CAPACITY)
    rate = _log_uniform(rng, *RATE_MBPS)
    if kind == "trace":
        trace = rng.choice(training_traces())
        sc["trace"] = os.path.relpath(trace, out)
        rate = mean_mbps([int(t) for t in trace.read_text().split()])
    duration = min(DURATION_S[1], max(DURATION_S[0],
                                      TARGET_PACKETS * 12_000 / (rate * 1e6)))
    if kind == "walk":
        (out / "traces").mkdir(parents=True, exist_ok=True)
        trace = out / "traces" / f"{name}.mahimahi"
        trace.write_text(mahimahi_text(opportunities(_walk(rng, rate,
                                                           math.ceil(duration)))))
        sc["trace"] = f"traces/{trace.name}"
    sc["rate_mbps"] = round(rate, 3)
    sc["duration_s"] = round(duration, 1)
    if kind == "steps":
        times = sorted(rng.uniform(0.2, 0.9) * duration for _ in range(rng.randint(1, 3)))
        sc["rate_steps"] = [{"at_s": round(t, 2),
                             "rate_mbps": round(_log_uniform(rng, *RATE_MBPS), 3)}
                            for t in times]
    n = min(MAX_FLOWS, 1 + int(rng.expovariate(1 / 3)))
    shared_rtt = _log_uniform(rng, *RTT_MS) if rng.random() < 0.5 else None
    flows = []
    for _ in range(n):
        cc = rng.choice(("dctcp", "dctcp", "cubic", "reno"))
        f: dict[str, Any] = {"cc": cc, "rtt_ms": round(shared_rtt or _log_uniform(
            rng, *RTT_MS), 1)}
        if cc != "dctcp" and rng.random() < 0.2:
            f["ecn"] = False
        if rng.random() < 0.25:
            f["start_s"] = round(rng.uniform(0, 0.5 * duration), 2)
        flows.append(f)
    sc["flows"] = flows
    if rng.random() < 0.35:
        sc["short_flows"] = [{"cc": rng.choice(("dctcp", "cubic")),
                              "rtt_ms": round(_log_uniform(rng, *RTT_MS), 1),
                              "per_s": round(rng.uniform(0.5, 3), 2),
                              "size_kb": rng.choice((50, 100, 200, 500))}]
    if rng.random() < 0.3:
        sc["loss"] = round(_log_uniform(rng, 1e-4, 1e-2), 5)
    if rng.random() < 0.3:
        sc["udp"] = [{"rate_mbps": round(rate * rng.uniform(0.05, 0.3), 3),
                      "on_s": round(rng.uniform(0.2, 2), 2),
                      "off_s": round(rng.uniform(0.2, 2), 2),
                      "pattern": rng.choice(("constant", "exponential"))}]
    return sc


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def to_toml(sc: dict[str, Any]) -> str:
    head = [f"{k} = {_toml_value(v)}" for k, v in sc.items() if not isinstance(v, list)]
    body = []
    for k, v in sc.items():
        if isinstance(v, list):
            for table in v:
                body.append(f"\n[[{k}]]")
                body += [f"{kk} = {_toml_value(vv)}" for kk, vv in table.items()]
    return "# Generated by `aqmllm-sim generate` (sim/aqmllm_sim/generate.py).\n" + \
        "\n".join(head + body) + "\n"


def generate(seed: int, count: int, out: Path) -> list[Path]:
    """Write `count` scenarios of `seed` into out; each is loaded back (validated)."""
    if seed < 0 or count < 1:
        raise GenerateError(f"want seed >= 0 and count >= 1, got {seed}, {count}")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        sc = draw(seed, i, out)
        path = out / f"{sc['name']}.toml"
        path.write_text(to_toml(sc))
        load(path)
        paths.append(path)
    return paths
