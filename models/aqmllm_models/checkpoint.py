"""The teacher on disk: build it, save it, load it back exactly.

The CLI's teacher, distill and DAgger stages all go through here, so a teacher is built
and reloaded one way only. Loading is strict: every adapter and head tensor in the files
must land in the model, with nothing left over, or it is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ADAPTER = "adapter"
HEADS = "heads.safetensors"
INFO = "train.json"


class CheckpointError(RuntimeError):
    """A teacher directory that does not load into the model it describes."""


def build_teacher(steps: Any, backbone: str | None, tiny: bool, full: bool = False,
                  kind: str = "pretrained", seed: int = 0) -> Any:
    """The L4S-LM teacher over the backbone (LoRA unless full), normalised on steps.

    kind is one of backbones.BACKBONES; the pretrained one is built here as it always
    was (the caller seeds torch first), so a recipe's teacher does not change with the
    other kinds' arrival."""
    import torch

    from .backbones import build, check_kind
    from .teacher import L4SLM, load_backbone, tiny_llama, with_lora

    check_kind(kind)
    if kind != "pretrained":
        if full:
            raise ValueError("full fine-tuning is for the pretrained backbone only")
        return build(kind, steps, seed, backbone, tiny)
    bb = tiny_llama(64) if tiny else load_backbone(backbone)
    d = bb.config.hidden_size
    if not full:
        bb = with_lora(bb)
    return L4SLM(bb, d, torch.tensor(steps.features.mean(0)),
                 torch.tensor(steps.features.std(0)))


def save_teacher(model: Any, out: Path, info: dict[str, Any]) -> None:
    """Adapters the Hugging Face way; encoder, embeddings and head as safetensors (and a
    backbone without adapters, whole, beside them). info["kind"]: the backbone's kind."""
    from safetensors.torch import save_file

    from .backbones import WITH_LORA, frozen_fingerprint

    kind = info.setdefault("kind", "pretrained")
    if kind in WITH_LORA:
        model.backbone.save_pretrained(out / ADAPTER)
    if kind == "random":
        info["frozen_fingerprint"] = frozen_fingerprint(model)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if kind not in WITH_LORA or not k.startswith("backbone.")}, out / HEADS)
    (out / INFO).write_text(json.dumps(info, indent=2))


def teacher_kind(teacher_dir: Path) -> str:
    """Its backbone's kind (backbones.BACKBONES); a teacher saved before kinds: pretrained."""
    return str(teacher_info(teacher_dir).get("kind", "pretrained"))


def teacher_info(teacher_dir: Path) -> dict[str, Any]:
    return json.loads((teacher_dir / INFO).read_text())


def teacher_returns(teacher_dir: Path) -> str:
    """The kind of return the teacher was trained on: its labels are conditioned on a
    quantile of the same kind."""
    return str(teacher_info(teacher_dir).get("returns", "packet"))


def teacher_weights(teacher_dir: Path) -> np.ndarray | None:
    """The class weights its training used (distillation undoes them), if recorded."""
    info = teacher_info(teacher_dir)
    return np.array(info["class_weights"]) if "class_weights" in info else None


def _load_adapters(backbone: Any, path: Path) -> None:
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(path)
    set_peft_model_state_dict(backbone, saved)
    loaded = get_peft_model_state_dict(backbone)
    unmatched = sorted(set(loaded) ^ set(saved))  # in the file only, or in the model only
    if unmatched:
        raise CheckpointError(f"{path}: adapters do not match the model "
                              f"(unmatched {unmatched[:3]})")
    differ = [k for k in saved if not torch.equal(loaded[k].cpu(), saved[k])]
    if differ:
        raise CheckpointError(f"{path}: adapters did not load ({differ[:3]} differ)")


def _load_heads(model: Any, path: Path, whole: bool = False) -> None:
    """Everything but the backbone (whole: everything) must be in the file, and nothing
    else."""
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(path), strict=False)
    missing = [k for k in result.missing_keys if whole or not k.startswith("backbone.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: heads do not match the model (missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]})")


def load_teacher(steps: Any, teacher_dir: Path, backbone: str | None, tiny: bool) -> Any:
    """The saved teacher on this process's device (a GPU where there is one).

    A tiny or random backbone is rebuilt from the seed its training recorded, so the
    adapters sit on the same base weights they were trained on (a random one's digest is
    checked)."""
    import torch
    from accelerate import PartialState

    from .backbones import WITH_LORA, frozen_fingerprint

    info = teacher_info(teacher_dir)
    kind, seed = teacher_kind(teacher_dir), int(info.get("seed", 0))
    torch.manual_seed(seed)
    try:
        model = build_teacher(steps, backbone, tiny, kind=kind, seed=seed)
    except ValueError as e:
        raise CheckpointError(f"{teacher_dir}: {e}") from e
    if kind in WITH_LORA:
        _load_adapters(model.backbone, teacher_dir / ADAPTER / "adapter_model.safetensors")
    if kind == "random" and frozen_fingerprint(model) != info.get("frozen_fingerprint"):
        raise CheckpointError(f"{teacher_dir}: the random backbone rebuilt from seed {seed} "
                              "is not the one it was trained on")
    _load_heads(model, teacher_dir / HEADS, whole=kind not in WITH_LORA)
    return model.to(PartialState().device)
