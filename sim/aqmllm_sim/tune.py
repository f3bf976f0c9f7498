"""The best DualPI2 per link: a small search over the core's step settings.

Linux's sch_dualpi2 marks L4S packets at a step threshold given in time (1 ms by
default) or in packets, and not below min_qlen_step packets. Where one packet's
serialisation time exceeds the time threshold (below 12 Mbit/s for 1 ms), the time
step marks an L queue of one packet, and scalable flows starve; a threshold in
packets does not depend on the rate. Each candidate below runs on every scenario over
the tuning seeds (never those of a comparison), and the scenario keeps:

- among the candidates whose mean utilisation is at most UTIL_SLACK below the Linux
  default's and whose mean L4S and classic p99 are each at most 1.5 x the default's
  + 2 ms (a fairer share for the scalable flows moves some classic delay),
- the one with the highest mean utilisation + Jain index (DualPI2's purpose: a full
  link shared fairly between scalable and classic flows),
- the Linux default (then the earlier candidate) unless another is better by more
  than TIE (run-to-run noise on a few seeds).

`aqmllm-sim tune-dualpi2` runs it and (with --write) puts the choice in each scenario's
[dualpi2] table, which both the dualpi2 baseline and the model's runs then use.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from .scenario import LINUX_STEP, load
from .sweep import sweep

#: (label, step settings), the Linux default first.
CANDIDATES: tuple[tuple[str, dict[str, int]], ...] = (
    ("1ms", dict(LINUX_STEP)),
    ("1ms-minq2", {**LINUX_STEP, "min_qlen_step": 2}),
    ("1pkt", {**LINUX_STEP, "step_thresh_pkts": 1}),
    ("2pkt", {**LINUX_STEP, "step_thresh_pkts": 2}),
    ("4pkt", {**LINUX_STEP, "step_thresh_pkts": 4}),
)
TUNING_SEEDS = (901, 902, 903)
TIE = 0.005
UTIL_SLACK = 0.02
L_P99_RATIO, L_P99_SLACK_MS = 1.5, 2.0
C_P99_RATIO, C_P99_SLACK_MS = 1.5, 2.0
STEP_KEYS = tuple(LINUX_STEP)


def choose(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scenario: the candidates' means and the chosen one (rules in the module doc)."""
    by: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        by.setdefault(r["scenario"], {}).setdefault(r["candidate"], []).append(r)
    out = {}
    for scenario, cands in by.items():
        means = {}
        for label, rs in cands.items():
            means[label] = {k: sum(r[k] for r in rs) / len(rs)
                            for k in ("utilisation", "jain", "l_p99_ms", "c_p99_ms")}
            means[label]["seeds"] = len(rs)
        base = means[CANDIDATES[0][0]]
        best, best_score = CANDIDATES[0][0], base["utilisation"] + base["jain"]
        for label, _ in CANDIDATES:
            m = means.get(label)
            if m is None:
                continue
            m["eligible"] = (
                m["utilisation"] >= base["utilisation"] - UTIL_SLACK
                and m["l_p99_ms"] <= L_P99_RATIO * base["l_p99_ms"] + L_P99_SLACK_MS
                and m["c_p99_ms"] <= C_P99_RATIO * base["c_p99_ms"] + C_P99_SLACK_MS)
            m["score"] = m["utilisation"] + m["jain"]
            if m["eligible"] and m["score"] > best_score + TIE:
                best, best_score = label, m["score"]
        out[scenario] = {"path": cands[best][0]["path"], "chosen": best,
                         "config": dict(CANDIDATES)[best], "candidates": means,
                         "rows": [r for rs in cands.values() for r in rs]}
    return out


def tune(paths: list[Path], seeds: tuple[int, ...] = TUNING_SEEDS,
         jobs: int = 2) -> dict[str, dict[str, Any]]:
    work = [(p, label, s) for p in paths for label, _ in CANDIDATES for s in seeds]
    scenarios = {p: load(p) for p in paths}
    results = sweep([dataclasses.replace(scenarios[p], seed=s, **dict(CANDIDATES)[label])
                     for p, label, s in work], ["dualpi2"], jobs)
    return choose([{"scenario": r["scenario"], "path": str(p), "candidate": label,
                    "seed": s, "utilisation": r["utilisation"], "jain": r["jain"],
                    "l_p99_ms": r["sojourn_ms_l"]["p99"], "c_p99_ms": r["sojourn_ms_c"]["p99"]}
                   for (p, label, s), r in zip(work, results, strict=True)])


def table(chosen: dict[str, dict[str, Any]]) -> str:
    lines = ["| scenario | candidate | utilisation | Jain | L p99 ms | C p99 ms | eligible |"
             " chosen |", "|---|---|---|---|---|---|---|---|"]
    for scenario in sorted(chosen):
        c = chosen[scenario]
        for label, m in c["candidates"].items():
            lines.append(f"| {scenario} | {label} | {m['utilisation']:.3f} | {m['jain']:.3f} "
                         f"| {m['l_p99_ms']:.2f} | {m['c_p99_ms']:.2f} | "
                         f"{'yes' if m.get('eligible') else 'no'} | "
                         f"{'**yes**' if label == c['chosen'] else ''} |")
    return "\n".join(lines)


_TABLE = re.compile(r"^\[dualpi2\][^\n]*\n", re.M)
_NEXT_TABLE = re.compile(r"^\[", re.M)


def write_step(path: Path, config: dict[str, int], note: str) -> None:
    """Put the step settings in the scenario file's [dualpi2] table (created at the end
    if missing), replacing any earlier step keys there; other keys stay."""
    text = path.read_text()
    block = f"# {note}\n" + "".join(f"{k} = {config[k]}\n" for k in STEP_KEYS)
    m = _TABLE.search(text)
    if m is None:
        text = text.rstrip("\n") + "\n\n[dualpi2]\n" + block
    else:
        nxt = _NEXT_TABLE.search(text, m.end())
        end = nxt.start() if nxt else len(text)
        body = "".join(line for line in text[m.end():end].splitlines(keepends=True)
                       if not (line.split("=")[0].strip() in STEP_KEYS
                               or line.startswith(f"# {note.split(':')[0]}")))
        text = text[:m.end()] + block + body + text[end:]
    path.write_text(text)
    load(path)  # still a valid scenario


def save(chosen: dict[str, dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(chosen, indent=2))
    (out / "tune.md").write_text(table(chosen) + "\n")
