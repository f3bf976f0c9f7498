"""Closed-loop evaluation: the model driving ns-3 through aqmllmd, against baselines.

Every scenario runs under each baseline and under the model (policy llm, the real
aqmllmd serving it; simulated time waits for each verdict). Per run: L4S and classic
p99 sojourn, utilisation, Jain index, loss. Single-queue baselines (PIE, CoDel) have one
sojourn distribution, reported in both columns.
"""

from __future__ import annotations

import dataclasses
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = sorted((REPO / "sim" / "scenarios" / "held-out").glob("*.toml"))
COLUMNS = ("utilisation", "jain", "l_p99_ms", "c_p99_ms", "loss")


def summarise(result: dict[str, Any], seed: int) -> dict[str, Any]:
    """The table's figures of one run (sim/README.md describes the result)."""
    both = result.get("sojourn_ms")
    q = result["queue_disc"]
    sent, dropped = q["sent"], q["dropped"]
    return {
        "scenario": result["scenario"], "policy": result["policy"], "seed": seed,
        "utilisation": result["utilisation"], "jain": result["jain"],
        "l_p99_ms": (result.get("sojourn_ms_l") or both)["p99"],
        "c_p99_ms": (result.get("sojourn_ms_c") or both)["p99"],
        "loss": dropped / max(sent + dropped, 1),
        "model_decided": (result["decisions_model"] / max(result["decisions_model"]
                                                         + result["decisions_fallback"], 1)
                          if "decisions_model" in result else None),
        "verdict_timeouts": result.get("verdict_timeouts", 0),
    }


def _baseline(job: tuple[Path, str, int, Path]) -> dict[str, Any]:
    from aqmllm_sim.runner import run
    from aqmllm_sim.scenario import load

    path, policy, seed, out = job
    sc = dataclasses.replace(load(path), seed=seed)
    return summarise(run(sc, policy, out, plots=False), seed)


#: Times a model run whose verdicts timed out is run again. Simulated time waits for
#: each verdict, so a run without a time out gives the same figures every time; one
#: with a time out depends on the host's load at that moment (3-9 of 80 runs on the
#: 2-core VM with nothing else running), and the gate refuses to judge it.
TIMEOUT_RETRIES = 2


def evaluate_closed_loop(model: Path, scenarios: list[Path], baselines: list[str],
                         seeds: list[int], out: Path, jobs: int = 2,
                         verdict_guard: str | None = None) -> list[dict[str, Any]]:
    """Rows (scenario, policy, seed) of figures; results.json, table.md, figures in out.

    verdict_guard, if given, replaces the scenarios' own (sim/aqmllm_sim/scenario.py); by
    default the model's own (its metadata), if it names one."""
    from aqmllm_sim.runner import run
    from aqmllm_sim.scenario import GUARDS, POLICIES, load
    from aqmllmd.model import ModelError
    from aqmllmd.model import load as load_for_serving

    bad = [p for p in baselines if p not in POLICIES or p == "llm"]
    if bad:
        raise ValueError(f"unknown baselines {bad}; known: "
                         f"{', '.join(p for p in POLICIES if p != 'llm')}")
    if not scenarios:
        raise ValueError("no scenario to evaluate on")
    if verdict_guard is None:
        try:
            verdict_guard = load_for_serving(model).verdict_guard
        except ModelError as e:
            raise ValueError(str(e)) from e
    if verdict_guard is not None and verdict_guard not in GUARDS:
        raise ValueError(f"verdict guard {verdict_guard!r}: want one of {', '.join(GUARDS)}")
    out.mkdir(parents=True, exist_ok=True)
    names = {p: load(p).name for p in scenarios}  # refuses a bad scenario before any run
    work = [(p, b, s, out / names[p] / f"{b}-{s}") for p in scenarios for s in seeds
            for b in baselines]
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(tqdm(pool.map(_baseline, work), total=len(work), desc="baselines"))
    for p in tqdm([(p, s) for p in scenarios for s in seeds], desc="model (llm)"):
        path, seed = p
        sc = dataclasses.replace(load(path), seed=seed)
        if verdict_guard is not None:
            sc = dataclasses.replace(sc, verdict_guard=verdict_guard)
        for _ in range(1 + TIMEOUT_RETRIES):
            r = summarise(run(sc, "llm", out / names[path] / f"llm-{seed}", model=str(model),
                              plots=False), seed)
            if not r["verdict_timeouts"]:
                break
        rows.append(r)
    results = {"model": str(model), "verdict_guard": verdict_guard, "rows": rows}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    paired = paired_table(rows) if "dualpi2" in baselines else ""
    late = timed_out_runs(rows)
    (out / "table.md").write_text(markdown_table(rows) + "\n" + (
        f"\nSeed by seed against DualPI2:\n\n{paired}\n" if paired else "") + (
        f"\n{late} of {len(seeds) * len(scenarios)} model runs had a verdict time out "
        f"(a loaded host), each run {1 + TIMEOUT_RETRIES} times: not reproducible.\n"
        if late else ""))
    _figures(rows, out, {names[p]: out / names[p] for p in scenarios},
             [*baselines, "llm"], seeds[0])
    return rows


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, policy): the mean over seeds."""
    keyed: dict[tuple[str, str], list[dict[str, Any]]] = {}
    order = {p: i for i, p in enumerate(dict.fromkeys(r["policy"] for r in rows))}
    for r in sorted(rows, key=lambda r: (r["scenario"], order[r["policy"]])):
        keyed.setdefault((r["scenario"], r["policy"]), []).append(r)
    return [{"scenario": s, "policy": p, "seeds": len(rs),
             **{c: sum(r[c] for r in rs) / len(rs) for c in COLUMNS}}
            for (s, p), rs in keyed.items()]


#: The promotion gate: the issue's goal, with room for run-to-run noise. Against DualPI2
#: on every scenario: utilisation at least UTIL_RATIO of its, Jain index at most
#: JAIN_SLACK below, p99 sojourn in both queues not measurably higher; and some p99
#: measurably lower somewhere, since under the dualpi2 guard a model that adds nothing
#: ties DualPI2 everywhere. "Measurably": by more than NOISE_SE standard errors of the
#: seed-by-seed difference (paired_rows); with one seed, any difference counts.
UTIL_RATIO, JAIN_SLACK, NOISE_SE = 0.98, 0.02, 2.0
P99S = (("L p99", "l_p99_ms"), ("classic p99", "c_p99_ms"))


def gate(rows: list[dict[str, Any]]) -> list[str]:
    """Why the model may not replace DualPI2-derived defaults: one line per failure."""
    means = {(r["scenario"], r["policy"]): r for r in mean_rows(rows)}
    paired = {(r["scenario"], r["figure"]): r for r in paired_rows(rows)}
    failures = []
    gains = 0
    for (scenario, policy), m in sorted(means.items()):
        d = means.get((scenario, "dualpi2"))
        if policy != "llm" or d is None:
            continue
        if m["utilisation"] < UTIL_RATIO * d["utilisation"]:
            failures.append(f"{scenario}: utilisation {m['utilisation']:.3f} against "
                            f"DualPI2's {d['utilisation']:.3f}")
        if m["jain"] < d["jain"] - JAIN_SLACK:
            failures.append(f"{scenario}: Jain index {m['jain']:.3f} against DualPI2's "
                            f"{d['jain']:.3f}")
        for name, key in P99S:
            diff = paired[(scenario, key)]
            se = diff["standard_error"]
            noise = 0.0 if math.isnan(se) else NOISE_SE * se  # NaN with one seed
            if diff["mean_difference"] > noise:
                failures.append(f"{scenario}: {name} {m[key]:.3f} against DualPI2's "
                                f"{d[key]:.3f}" + (f" (noise ±{noise:.3f})" if noise else ""))
            gains += diff["mean_difference"] < -noise
    late = timed_out_runs(rows)
    if late:
        failures.append(f"{late} model run(s) had a verdict time out on the wall clock (a "
                        "loaded host): their figures depend on the load; run the closed "
                        "loop alone")
    if not any(p == "llm" for _, p in means) or not any(p == "dualpi2" for _, p in means):
        failures.append("the gate needs runs of both the model and dualpi2")
    elif not failures and not gains:
        failures.append("no p99 is measurably lower than DualPI2's anywhere: the model adds "
                        "nothing")
    return failures


def timed_out_runs(rows: list[dict[str, Any]]) -> int:
    """Model runs in which some verdict missed the queue disc's wall-clock wait, so that
    DualPI2 decided that packet. Simulated time waits for every verdict, so a run is
    reproducible bit for bit only without them; on a loaded host (another closed loop
    beside it) a third of the runs had one, and a single fallback sends TCP elsewhere."""
    return sum(1 for r in rows if r["policy"] == "llm" and r.get("verdict_timeouts"))


def paired_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario and figure: the model less DualPI2, seed by seed (the same seed is
    the same conditions), as a mean with its standard error, and on how many seeds the
    model was the better. It tells a real difference from run-to-run noise, which a
    mean over a few seeds does not."""
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["scenario"], r["policy"]), {})[r["seed"]] = r
    out = []
    for (scenario, policy), model in sorted(by.items()):
        base = by.get((scenario, "dualpi2"))
        if policy != "llm" or base is None:
            continue
        seeds = sorted(set(model) & set(base))
        for key in COLUMNS[:4]:
            d = [model[s][key] - base[s][key] for s in seeds]
            mean = sum(d) / len(d)
            se = (sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) ** 0.5 \
                if len(d) > 1 else float("nan")
            lower_better = key.endswith("p99_ms")
            better = sum((x < 0) if lower_better else (x > 0) for x in d)
            out.append({"scenario": scenario, "figure": key, "seeds": len(d),
                        "mean_difference": mean, "standard_error": se, "model_better": better})
    return out


def paired_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | figure | model − DualPI2 (mean ± s.e.) | seeds the model is better |",
             "|---|---|---|---|"]
    for r in paired_rows(rows):
        lines.append(f"| {r['scenario']} | {r['figure']} | {r['mean_difference']:+.3f} ± "
                     f"{r['standard_error']:.3f} | {r['model_better']} of {r['seeds']} |")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scenario | policy | utilisation | Jain | L p99 ms | C p99 ms | loss % |",
             "|---|---|---|---|---|---|---|"]
    for r in mean_rows(rows):
        lines.append(f"| {r['scenario']} | {'model' if r['policy'] == 'llm' else r['policy']} "
                     f"| {r['utilisation']:.3f} | {r['jain']:.3f} | {r['l_p99_ms']:.2f} "
                     f"| {r['c_p99_ms']:.2f} | {100 * r['loss']:.3f} |")
    return "\n".join(lines)


def _figures(rows: list[dict[str, Any]], out: Path, dirs: dict[str, Path],
             policies: list[str], seed: int) -> None:
    from aqmllm_sim.plots import _pyplot, compare_cdf

    for name, d in dirs.items():
        compare_cdf({p: d / f"{p}-{seed}" / "sojourns.bin" for p in policies},
                    d / "sojourn_cdf.png", f"{name}: sojourn per policy")
    plt = _pyplot()
    means = mean_rows(rows)
    scen = list(dirs)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(policies)
    for ax, col, label in zip(axes, ("l_p99_ms", "c_p99_ms", "utilisation"),
                              ("L p99 sojourn (ms)", "classic p99 sojourn (ms)",
                               "utilisation"), strict=True):
        for i, p in enumerate(policies):
            ys = [next((m[col] for m in means if m["scenario"] == s and m["policy"] == p), 0)
                  for s in scen]
            ax.bar([j + i * width for j in range(len(scen))], ys, width,
                   label="model" if p == "llm" else p)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scen))])
        ax.set_xticklabels([s.replace("heldout-", "") for s in scen], rotation=20,
                           fontsize=8)
        ax.set_title(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
