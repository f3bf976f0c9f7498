"""DAgger: the student drives ns-3 through aqmllmd; the teacher labels where it went.

A student distilled on recorded states only is right where the behaviour policies went;
its own decisions lead elsewhere. Each round serves the current student to the real
daemon (policy llm), records the states visited, has the teacher label them, and
distils again on everything gathered so far.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def run_dagger(teacher_dir: Path, datasets: tuple[str, ...], scenarios: tuple[str, ...],
               out: Path, backbone: str | None = None, tiny: bool = False, rounds: int = 2,
               max_windows: int = 20000, max_visited: int = 5000,
               labels: Path | None = None, epochs: int = 10,
               hidden: int = 64, prior: str = "none", step_ms: float = 1.0,
               teacher_weight: float = 1.0, guard: str = "dualpi2", queues: str = "both",
               report: Callable[[dict[str, Any]], None] | None = None,
               ) -> list[dict[str, Any]]:
    from aqmllm_sim.dataset import flatten, load_rows
    from aqmllm_sim.runner import run
    from aqmllm_sim.scenario import load as load_scenario

    from .checkpoint import load_teacher, teacher_returns, teacher_weights
    from .data import from_columns, load
    from .student import Student, distill, export, save
    from .train import teacher_probs

    steps = load(*datasets, returns=teacher_returns(teacher_dir))
    teacher = load_teacher(steps, teacher_dir, backbone, tiny)
    weights = teacher_weights(teacher_dir)
    target = float(np.quantile(steps.returns, 0.9))
    if labels is not None:
        with np.load(labels, allow_pickle=False) as z:
            xs, ps = [z["states"]], [z["probs"]]
    else:
        probs, idx = teacher_probs(teacher, steps, target_return=target,
                                   max_windows=max_windows, weights=weights, progress=True)
        xs, ps = [steps.features[idx]], [probs]
    student = Student(steps.features, hidden, prior, step_ms, teacher_weight, guard, queues)
    onnx_path = out / "model.onnx"
    log: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds + 1):
            x, p = np.concatenate(xs), np.concatenate(ps)
            history = distill(student, x, p, epochs=epochs)
            held = x[np.random.default_rng(rnd).choice(len(x), min(1000, len(x)),
                                                       replace=False)]
            export(student, onnx_path, f"AQM-LLM student after DAgger round {rnd}", held)
            if rnd == rounds:
                break
            for s_path in scenarios:
                sc = load_scenario(s_path)
                rows_path = Path(tmp, f"round-{rnd}.bin")
                sc = dataclasses.replace(sc, seed=100 + rnd, verdict_guard=guard)
                r = run(sc, "llm", model=str(onnx_path),
                        record=rows_path, plots=False)
                rows = load_rows(rows_path)
                visited = from_columns(flatten(rows), [len(rows)])
                vp, vi = teacher_probs(teacher, visited, target_return=target,
                                       max_windows=max_visited, weights=weights, seed=rnd)
                xs.append(visited.features[vi])
                ps.append(vp)
                entry = {"round": rnd, "scenario": sc.name, "visited": len(rows),
                         "labelled": len(vi), "kl_last": history[-1],
                         "utilisation": r["utilisation"],
                         "l_p99_ms": r["sojourn_ms_l"]["p99"],
                         "c_p99_ms": r["sojourn_ms_c"]["p99"]}
                log.append(entry)
                if report is not None:
                    report(entry)
    save(student, out, {"teacher": str(teacher_dir), "datasets": list(datasets),
                        "target_return": target, "dagger_rounds": rounds,
                        "scenarios": list(scenarios), "states": int(sum(len(v) for v in xs)),
                        "calibrated": weights is not None, "log": log})
    (out / "dagger.json").write_text(json.dumps(log, indent=2))
    return log
