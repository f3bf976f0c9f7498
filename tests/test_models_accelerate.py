"""The teacher under `accelerate launch` itself, as models/README.md documents it for GPUs,
here on two CPU processes (ACCELERATE_USE_CPU=true: gloo): the launcher starts both, each
trains on its shard, one writes, and a run stopped at a checkpoint and resumed under the
launcher ends exactly where an uninterrupted one does."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft",
                                                      "accelerate")),
    reason="the train extra (torch, transformers, peft, accelerate) is not installed")

from test_models_pipeline import _dataset  # noqa: E402


def _launch(data: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher is not None
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                        "no", "-m", "aqmllm_models.cli", "teacher", str(data), "--tiny",
                        "--batch", "16", "--checkpoint-every", "2", "--out", str(out), *args],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(out.rglob("*.safetensors"))
    files = [f for f in files if "checkpoint" not in f.parts]
    assert files
    return {f"{f.relative_to(out)}:{k}": v for f in files for k, v in load_file(f).items()}


def test_accelerate_launch_two_processes_and_resume(tmp_path: Path) -> None:
    import torch

    data = _dataset(tmp_path, 600)
    r = _launch(data, tmp_path / "straight", "--max-steps", "6")
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == 1  # one writer
    straight = json.loads((tmp_path / "straight" / "train.json").read_text())
    assert straight["processes"] == 2 and straight["steps"] == 6

    _launch(data, tmp_path / "resumed", "--max-steps", "4")
    _launch(data, tmp_path / "resumed", "--max-steps", "6", "--resume")
    resumed = json.loads((tmp_path / "resumed" / "train.json").read_text())
    assert resumed["processes"] == 2 and resumed["steps"] == 6
    assert resumed["losses"] == straight["losses"]
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
