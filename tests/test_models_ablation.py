"""`aqmllm-train ablation` on tiny data with the tiny backbone: every backbone trains in
its own process, its held-out metrics are finite, the table and the JSON have every row,
and a second invocation reuses the finished runs. The metrics against known values."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft",
                                                      "accelerate")),
    reason="the train extra (torch, transformers, peft, accelerate) is not installed")

from test_models_pipeline import _dataset  # noqa: E402


def test_every_backbone_trains_and_is_scored(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aqmllm_models.ablation import BACKBONES, METRICS
    from aqmllm_models.cli import cli

    train, held = _dataset(tmp_path, 400, seed=0), _dataset(tmp_path, 300, seed=1)
    out = tmp_path / "ablation"
    args = ["ablation", str(train), "--heldout", str(held), "--tiny", "--seeds", "0,1",
            "--steps", "2", "--batch", "8", "--eval-windows", "60", "--returns", "packet",
            "--out", str(out), "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert json.loads(r.output[r.output.index("{"):]) == results
    runs = results["runs"]
    assert sorted((x["backbone"], x["seed"]) for x in runs) == sorted(
        (b, s) for b in BACKBONES for s in (0, 1))
    for x in runs:
        assert x["steps"] == 2 and x["seconds_per_step"] > 0 and x["peak_rss_mb"] > 0
        assert x["trainable_params"] > 0
        for m in METRICS:
            assert x[m] is not None and math.isfinite(x[m]), (x["backbone"], m, x[m])
        assert x["balanced_nll"] > 0 and 0 <= x["ece"] <= 1
    # Only LoRA trains on the Llama backbones; nothing is frozen without one.
    by = {x["backbone"]: x for x in runs}
    assert by["pretrained"]["frozen_params"] == by["random"]["frozen_params"] > 0
    assert by["none"]["frozen_params"] == by["gru"]["frozen_params"] == 0
    # Two seeds of one backbone differ (new layers, adapters, batches), even where the
    # backbone's own weights are the same (the tiny stand-in for "pretrained").
    for b in BACKBONES:
        nll = [x["balanced_nll"] for x in runs if x["backbone"] == b]
        assert nll[0] != nll[1], b
    summary = results["summary"]
    assert list(summary) == list(BACKBONES)
    for row in summary.values():
        assert row["seeds"] == [0, 1]
        assert 0 < row["seconds_per_step"]["min"] <= row["seconds_per_step"]["mean"]
        assert all(math.isfinite(row[m]["mean"]) and math.isfinite(row[m]["sd"])
                   for m in METRICS)
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(BACKBONES)
    for b in BACKBONES:
        assert sum(line.startswith(f"| {b} | 2 |") for line in table) == 1
        assert (out / "runs" / f"{b}-seed1" / "result.json").is_file()
    assert (out / "ablation.png").is_file()

    # Finished runs are not run again (a stopped ablation resumes) ...
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    again = json.loads((out / "results.json").read_text())
    assert again["runs"] == runs and again["runs_seconds"] == results["runs_seconds"]
    # An unknown backbone is refused before anything runs.
    r = CliRunner().invoke(cli, [*args, "--backbones", "pretrained,nope"])
    assert r.exit_code != 0 and "nope" in r.output


def test_metrics_against_known_values() -> None:
    from aqmllm_models.ablation import _auc, _ece, metrics

    truth = np.array([0, 0, 1, 2])
    score = np.array([0.1, 0.4, 0.35, 0.8])
    # 1 of the 2 negatives below each positive, the classic textbook example: 0.75.
    assert _auc(score, np.array([False, False, True, True])) == pytest.approx(0.75)
    assert _auc(np.ones(4), truth == 0) == pytest.approx(0.5)  # ties count half
    assert _auc(score, np.zeros(4, bool)) is None  # one class: undefined
    perfect = np.eye(3)[truth]
    assert _ece(perfect, truth, np.ones(4)) == pytest.approx(0.0)
    # Always 0.9 confident, right half the time: 0.4 off.
    wrong = np.full((4, 3), 0.05)
    wrong[np.arange(4), [0, 1, 1, 0]] = 0.9
    assert _ece(wrong, truth, np.ones(4)) == pytest.approx(0.4)
    # Balanced NLL: each action's mean NLL, averaged over actions, not over windows.
    raw = np.array([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25],
                    [0.25, 0.25, 0.5]])
    m = metrics(raw, raw, np.array([0, 0, 1, 2]), np.ones(4))
    assert m["balanced_nll"] == pytest.approx((np.log(2) + np.log(4) + np.log(2)) / 3)


def test_run_prefixes_keep_the_start_of_every_run() -> None:
    """--train-fraction: less data of the same kind, whole runs never merged."""
    from aqmllm_models.data import Steps, run_prefixes, windows

    n = np.arange(10)
    steps = Steps(n[:, None].astype(np.float32), n % 3, n.astype(np.float32),
                  n.astype(np.float32), np.array([0, 4, 9]))
    half = run_prefixes(steps, 0.5)
    assert half.features[:, 0].tolist() == [0, 1, 4, 5, 6, 9]  # ceil(half) of 4, 5, 1
    assert half.run_starts.tolist() == [0, 2, 5]
    assert half.returns.tolist() == [0, 1, 4, 5, 6, 9]  # the whole runs' returns-to-go
    assert windows(half, 2).tolist() == [0, 2, 3]  # no window across a cut
    assert run_prefixes(steps, 1.0).actions.tolist() == steps.actions.tolist()
    with pytest.raises(ValueError, match="fraction"):
        run_prefixes(steps, 0)
