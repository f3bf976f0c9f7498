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


def build_teacher(steps: Any, backbone: str | None, tiny: bool, full: bool = False) -> Any:
    """The L4S-LM teacher over the backbone (LoRA unless full), normalised on steps."""
    import torch

    from .teacher import L4SLM, load_backbone, tiny_llama, with_lora

    bb = tiny_llama(64) if tiny else load_backbone(backbone)
    d = bb.config.hidden_size
    if not full:
        bb = with_lora(bb)
    return L4SLM(bb, d, torch.tensor(steps.features.mean(0)),
                 torch.tensor(steps.features.std(0)))


def save_teacher(model: Any, out: Path, info: dict[str, Any]) -> None:
    """Adapters the Hugging Face way; encoder, embeddings and head as safetensors."""
    from safetensors.torch import save_file

    model.backbone.save_pretrained(out / ADAPTER)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith("backbone.")}, out / HEADS)
    (out / INFO).write_text(json.dumps(info, indent=2))


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


def _load_heads(model: Any, path: Path) -> None:
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(path), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("backbone.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path}: heads do not match the model (missing {missing[:3]}, "
                              f"unexpected {list(result.unexpected_keys)[:3]})")


def load_teacher(steps: Any, teacher_dir: Path, backbone: str | None, tiny: bool) -> Any:
    """The saved teacher on this process's device (a GPU where there is one).

    A tiny backbone is random: it is rebuilt from the seed its training recorded, so the
    adapters sit on the same base weights they were trained on."""
    import torch
    from accelerate import PartialState

    torch.manual_seed(int(teacher_info(teacher_dir).get("seed", 0)))
    model = build_teacher(steps, backbone, tiny)
    _load_adapters(model.backbone, teacher_dir / ADAPTER / "adapter_model.safetensors")
    _load_heads(model, teacher_dir / HEADS)
    return model.to(PartialState().device)
