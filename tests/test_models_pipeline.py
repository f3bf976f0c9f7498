"""The models pipeline on a tiny random Llama: shapes, LoRA, training, distillation, export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")),
    reason="the train extra (torch, transformers, peft) is not installed")

from aqm_bridge.abi import STATE_DTYPE  # noqa: E402
from aqmllmd import features  # noqa: E402


def synthetic_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Dataset columns (sim/DATASET.md) whose actions depend on the state."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    s = np.zeros(n, STATE_DTYPE)
    s["seq"] = np.arange(n)
    s["ts_ns"] = np.arange(n) * 100_000
    s["queue"] = rng.integers(0, 2, n)
    s["ecn"] = np.where(s["queue"] == 1, 1, rng.choice([0, 2], n))
    s["len"] = 1500
    s["sojourn_ns"] = rng.integers(0, 30_000_000, (n, 2))
    s["deadline_ns"] = s["ts_ns"] + s["sojourn_ns"][:, 0]
    s["backlog_bytes"] = s["sojourn_ns"] // 1000
    for name in STATE_DTYPE.names:
        cols[name] = s[name]
    long_wait = s["sojourn_ns"][np.arange(n), s["queue"]] > 20_000_000
    cols["action"] = np.where(long_wait, np.where(s["queue"] == 1, 2, 1), 0).astype(np.uint8)
    cols["packet_sojourn_ns"] = s["sojourn_ns"][:, 0].astype(np.int64)
    return cols


@pytest.fixture(scope="module")
def steps():  # noqa: ANN201
    from aqmllm_models.data import from_columns

    return from_columns(synthetic_columns(600), [300, 300])


def test_steps_from_columns(steps) -> None:  # noqa: ANN001
    from aqmllm_models.data import GAMMA, windows

    assert steps.features.shape == (600, features.N_FEATURES)
    assert list(steps.run_starts) == [0, 300]
    end = 299
    assert steps.returns[end] == pytest.approx(steps.rewards[end])
    assert steps.returns[10] == pytest.approx(steps.rewards[10] + GAMMA * steps.returns[11])
    w = windows(steps, 8)
    assert len(w) == 2 * (300 - 7) and not np.any((w < 300) & (w + 7 >= 300))


def model_for(steps):  # noqa: ANN001, ANN201
    import torch

    from aqmllm_models.teacher import L4SLM, tiny_llama, with_lora

    torch.manual_seed(0)
    return L4SLM(with_lora(tiny_llama(64)), 64, torch.tensor(steps.features.mean(0)),
                 torch.tensor(steps.features.std(0)))


def test_teacher_gives_one_distribution_per_step(steps) -> None:  # noqa: ANN001
    import torch

    model = model_for(steps)
    x = torch.from_numpy(steps.features[:16].reshape(2, 8, -1))
    logits = model(torch.zeros(2, 8), x, torch.full((2, 8), 3))
    assert logits.shape == (2, 8, 3)
    probs = torch.softmax(logits, -1)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 8))


def test_lora_trains_adapters_and_keeps_the_backbone_frozen(steps) -> None:  # noqa: ANN001
    from aqmllm_models.train import train_teacher

    model = model_for(steps)
    frozen = {n: p.detach().clone() for n, p in model.backbone.named_parameters()
              if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in model.backbone.named_parameters()
            if "lora_B" in n}
    assert frozen and lora
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters()
                   if "lora_" not in n)
    train_teacher(model, steps, k=8, max_steps=3, progress=False)
    for n, p in model.backbone.named_parameters():
        if n in frozen:
            assert torch_equal(p, frozen[n]), n
    assert any(not torch_equal(p, lora[n]) for n, p in model.backbone.named_parameters()
               if n in lora)


def torch_equal(a, b) -> bool:  # noqa: ANN001
    import torch

    return bool(torch.equal(a.detach(), b))


def test_training_reduces_the_loss(steps) -> None:  # noqa: ANN001
    from aqmllm_models.train import train_teacher

    model = model_for(steps)
    r = train_teacher(model, steps, k=8, epochs=3, lr=3e-3, batch=32, progress=False)
    assert r["last_loss"] < 0.7 * r["first_loss"], r


def test_adapters_save_and_load_the_hugging_face_way(steps, tmp_path: Path) -> None:  # noqa: ANN001
    import torch
    from peft import PeftModel

    from aqmllm_models.teacher import tiny_llama

    model = model_for(steps)
    model.backbone.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    torch.manual_seed(0)
    base = tiny_llama(64)  # the same seed gives the same base weights
    restored = PeftModel.from_pretrained(base, tmp_path / "adapter")
    emb = torch.randn(1, 6, 64)
    with torch.no_grad():
        a = model.backbone(inputs_embeds=emb).last_hidden_state
        b = restored(inputs_embeds=emb).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5)


def test_distilled_student_exports_to_the_daemon_contract(steps, tmp_path: Path) -> None:  # noqa: ANN001
    from aqmllm_models.student import Student, distill, export
    from aqmllm_models.train import teacher_probs

    teacher = model_for(steps)
    probs, idx = teacher_probs(teacher, steps, k=8)
    x = steps.features[idx]
    student = Student(steps.features)
    history = distill(student, x, probs, epochs=15)
    assert history[-1] < history[0]
    r = export(student, tmp_path / "student.onnx", "test export", x[:200])
    assert r["max_abs_diff"] < 1e-4


def test_classification_report() -> None:
    from aqmllm_models.train import classification_report

    rep = classification_report(np.array([0, 0, 1, 2, 2, 0]), np.array([0, 1, 1, 2, 0, 0]))
    assert rep["recall"] == {"enqueue": 2 / 3, "drop": 0.5, "mark": 1.0}
    assert 0 < rep["macro_f1"] < 1


def _dataset(tmp_path: Path, n: int = 400, seed: int = 0) -> Path:
    from aqmllm_sim.dataset import ROW_DTYPE, save_npz

    cols = synthetic_columns(n, seed)
    rows = np.zeros(n, ROW_DTYPE)
    for name in STATE_DTYPE.names:
        rows["state"][name] = cols[name]
    rows["dequeue_ns"] = cols["ts_ns"] + cols["packet_sojourn_ns"].astype(np.uint64)
    rows["action"] = cols["action"]
    return save_npz(rows, tmp_path / f"d{seed}.npz", {"runs": [{"seed": 1, "recorded": n}]})


def test_the_same_seed_and_data_give_the_same_teacher(tmp_path: Path) -> None:
    """The new layers (encoder, head, adapters, here the tiny backbone too) are seeded
    before they exist, so a rebuild of `make model` starts from the same teacher."""
    import json

    from click.testing import CliRunner

    from aqmllm_models.cli import cli

    data = _dataset(tmp_path)

    def losses(seed: int, out: str) -> list[float]:
        r = CliRunner().invoke(cli, ["teacher", str(data), "--tiny", "--max-steps", "3",
                                     "--seed", str(seed), "--out", str(tmp_path / out)])
        assert r.exit_code == 0, r.output
        return json.loads((tmp_path / out / "train.json").read_text())["losses"]

    first = losses(0, "a")
    assert losses(0, "b") == first
    assert losses(1, "c") != first


def test_train_cli_end_to_end(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from aqmllm_models.cli import cli

    data, more = _dataset(tmp_path), _dataset(tmp_path, 300, seed=1)
    run = CliRunner().invoke
    r = run(cli, ["teacher", str(data), str(more), "--tiny", "--max-steps", "5", "--out",
                  str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    train = json.loads((tmp_path / "t" / "train.json").read_text())
    assert train["steps"] == 5 and len(train["class_weights"]) == 3
    assert (tmp_path / "t" / "heads.safetensors").is_file()  # no pickle
    r = run(cli, ["distill", str(tmp_path / "t"), str(data), "--tiny", "--epochs", "3",
                  "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["calibrated"] is True
    r = run(cli, ["export", str(tmp_path / "s"), str(data), "--out", str(tmp_path / "s.onnx"),
                  "--int8", str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.output
    exported = json.loads(r.stdout.strip().splitlines()[-1])
    assert exported["max_abs_diff"] < 1e-4 and exported["int8"]["argmax_agreement"] > 0.9
    r = run(cli, ["evaluate", str(tmp_path / "s.onnx"), str(data)])
    assert r.exit_code == 0 and "macro_f1" in r.output
    for bad in (["--teacher-weight", "1.5"], ["--prior", "pie"], ["--step-ms", "0"],
                ["--teacher-weight", "0.5"]):  # below 1 without a prior
        r = run(cli, ["distill", str(tmp_path / "t"), str(data), "--tiny", *bad,
                      "--out", str(tmp_path / "bad")])
        assert r.exit_code == 2 and not (tmp_path / "bad").exists(), r.output


def test_calibration_undoes_the_class_weights() -> None:
    from aqmllm_models.train import calibrate, class_weights

    actions = np.array([0] * 96 + [1] * 1 + [2] * 3)
    w = class_weights(actions).numpy()
    true = np.array([[0.96, 0.01, 0.03]])
    weighted = true * w / (true * w).sum()  # what a weighted loss drives the model to
    assert weighted[0, 1] > 0.2  # sampled as is, a third of packets would be dropped
    np.testing.assert_allclose(calibrate(weighted, w), true, rtol=1e-5)


def test_checkpoint_resume_continues_where_it_stopped(steps, tmp_path: Path) -> None:  # noqa: ANN001
    import torch

    from aqmllm_models.train import train_teacher, trainable_state

    ck = tmp_path / "ck"
    straight = model_for(steps)
    r_all = train_teacher(straight, steps, k=8, batch=16, max_steps=6, progress=False)
    first = model_for(steps)
    train_teacher(first, steps, k=8, batch=16, max_steps=3, progress=False, checkpoint=ck,
                  checkpoint_every=2)
    assert (ck / "progress.json").is_file() and not (tmp_path / "ck.tmp").exists()
    resumed = model_for(steps)  # a fresh process's model, same initial weights
    r = train_teacher(resumed, steps, k=8, batch=16, max_steps=6, progress=False,
                      checkpoint=ck, resume=True)
    assert r["steps"] == 6
    np.testing.assert_allclose(r["losses"], r_all["losses"], rtol=1e-4)
    a, b = trainable_state(straight), trainable_state(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_checkpoint_of_another_model_is_refused(steps, tmp_path: Path) -> None:  # noqa: ANN001
    import torch

    from aqmllm_models.train import load_checkpoint, save_checkpoint

    model = model_for(steps)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    save_checkpoint(tmp_path / "ck", model.head, opt, {"step": 1})
    with pytest.raises(ValueError, match="another model"):
        load_checkpoint(tmp_path / "ck", model, opt)


@pytest.mark.skipif(importlib.util.find_spec("ns3") is None, reason="needs the sim extra")
def test_dagger_and_int8_quantisation(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from aqmllm_models.cli import cli
    from aqmllm_sim.cli import cli as sim_cli

    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "s"\nrate_mbps = 10\nduration_s = 2\n'
                        '[[flows]]\ncc = "dctcp"\n[[flows]]\ncc = "cubic"\n')
    run = CliRunner().invoke
    data = tmp_path / "d.npz"
    assert run(sim_cli, ["record", str(scenario), "--out", str(data)]).exit_code == 0
    r = run(cli, ["teacher", str(data), "--tiny", "--max-steps", "5", "--out",
                  str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    r = run(cli, ["distill", str(tmp_path / "t"), str(data), "--tiny", "--epochs", "2",
                  "--max-windows", "400", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    r = run(cli, ["dagger", str(tmp_path / "t"), str(data), "--scenario", str(scenario),
                  "--tiny", "--rounds", "1", "--labels", str(tmp_path / "d" / "labels.npz"),
                  "--max-visited", "300", "--prior", "dualpi2", "--teacher-weight", "0.5",
                  "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["rounds"][0]["visited"] > 0  # the student drove the simulator
    assert summary["rounds"][0]["labelled"] <= 300
    r = run(cli, ["quantize", str(tmp_path / "s" / "model.onnx"), str(data), "--out",
                  str(tmp_path / "q.onnx")])
    assert r.exit_code == 0, r.output
    q = json.loads(r.stdout.strip().splitlines()[-1])
    assert q["argmax_agreement"] > 0.9 and q["bytes"]["int8"] < q["bytes"]["float"]


def test_two_processes_share_the_training_with_no_code_change(tmp_path: Path) -> None:
    """What `accelerate launch` does on GPUs or machines, here as two CPU processes
    (gloo): each takes its shard of every batch, one writes the results."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    data = _dataset(tmp_path, 600)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "aqmllm_models.cli",
                        "teacher", str(data), "--tiny", "--max-steps", "4", "--batch", "16",
                        "--out", str(tmp_path / "t")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("{")]) == 1
    train = json.loads((tmp_path / "t" / "train.json").read_text())
    assert train["processes"] == 2 and train["steps"] == 4


def test_a_trained_teacher_reloads_exactly_and_a_wrong_one_is_refused(
        steps, tmp_path: Path) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file, save_file

    from aqmllm_models.checkpoint import CheckpointError, load_teacher, save_teacher
    from aqmllm_models.train import train_teacher

    torch.manual_seed(3)
    model = model_for(steps)
    train_teacher(model, steps, k=8, max_steps=3, lr=1e-2, progress=False)
    lora_b = [p for n, p in model.backbone.named_parameters() if "lora_B" in n]
    assert any(bool(p.abs().sum() > 0) for p in lora_b)  # trained: not the zero init
    save_teacher(model, tmp_path, {"seed": 0})

    restored = load_teacher(steps, tmp_path, None, tiny=True)
    x = torch.from_numpy(steps.features[:16].reshape(2, 8, -1))
    args = (torch.zeros(2, 8), x, torch.full((2, 8), 3))
    with torch.no_grad():
        assert torch.allclose(model(*args), restored.cpu()(*args), atol=1e-6)

    heads = load_file(tmp_path / "heads.safetensors")
    save_file({**heads, "head.extra": torch.zeros(1)}, tmp_path / "heads.safetensors")
    with pytest.raises(CheckpointError, match="heads"):
        load_teacher(steps, tmp_path, None, tiny=True)
    save_file(heads, tmp_path / "heads.safetensors")
    adapter = tmp_path / "adapter" / "adapter_model.safetensors"
    saved = load_file(adapter)
    save_file({k: v for k, v in saved.items() if "layers.1." not in k}, adapter)
    with pytest.raises(CheckpointError, match="adapters"):
        load_teacher(steps, tmp_path, None, tiny=True)


@pytest.mark.parametrize("kind", ["random", "none", "gru", "constant"])
def test_every_backbone_kind_trains_saves_reloads_and_distils(tmp_path: Path,
                                                              kind: str) -> None:
    """A control teacher (backbones.py) goes through the same teacher, distill and
    reload path as the language model: `--kind` at training, read back from train.json."""
    import json

    import torch
    from click.testing import CliRunner
    from safetensors.torch import load_file, save_file

    from aqmllm_models.checkpoint import CheckpointError, load_teacher, teacher_kind
    from aqmllm_models.cli import cli
    from aqmllm_models.data import load

    data = _dataset(tmp_path)
    t = tmp_path / "t"
    r = CliRunner().invoke(cli, ["teacher", str(data), "--kind", kind, "--tiny", "--seed", "2",
                                 "--max-steps", "4", "--lr", "1e-2", "--out", str(t)])
    assert r.exit_code == 0, r.output
    assert teacher_kind(t) == kind
    assert (t / "adapter").is_dir() == (kind == "random")
    steps = load(str(data))
    first = load_teacher(steps, t, None, tiny=True).cpu().eval()
    again = load_teacher(steps, t, None, tiny=True).cpu().eval()
    x = torch.from_numpy(steps.features[:16].reshape(2, 8, -1))
    args = (torch.zeros(2, 8), x, torch.full((2, 8), 3))
    with torch.no_grad():
        out = first(*args)
        assert torch.equal(out, again(*args))
        if kind == "constant":  # one distribution for every state
            assert torch.allclose(out, out[0, 0].expand_as(out))
        else:
            assert not torch.allclose(out, out[0, 0].expand_as(out))
    r = CliRunner().invoke(cli, ["distill", str(t), str(data), "--tiny", "--epochs", "2",
                                 "--max-windows", "200", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    # A heads file that lacks a tensor of the model is refused, not half-loaded.
    heads = load_file(t / "heads.safetensors")
    save_file({k: v for k, v in heads.items() if k != "head.bias"}, t / "heads.safetensors")
    with pytest.raises(CheckpointError, match="heads"):
        load_teacher(steps, t, None, tiny=True)
    save_file(heads, t / "heads.safetensors")
    if kind == "random":  # rebuilt from another seed, the base weights differ
        info = json.loads((t / "train.json").read_text())
        (t / "train.json").write_text(json.dumps({**info, "seed": 3}))
        with pytest.raises(CheckpointError, match="not the one it was trained on"):
            load_teacher(steps, t, None, tiny=True)


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aqmllm_models.cli import cli

    r = CliRunner().invoke(cli, ["teacher", str(_dataset(tmp_path)), "--kind", "lstm",
                                 "--tiny", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "lstm" in r.output and not (tmp_path / "t").exists()
