"""The model contract: what an ONNX file must be for aqmllmd to serve it.

Documented in daemon/README.md; the training pipeline (models/) exports to it and the
daemon validates every file against it before serving (aqmllmd.model).
"""

from __future__ import annotations

from aqm_bridge import abi

CONTRACT_VERSION = "1"

#: Graph input: float32 [batch, len(FEATURE_NAMES)], raw feature values (see features.py).
INPUT_NAME = "features"
#: Graph output: float32 [batch, 3], a probability distribution over ACTIONS per row.
OUTPUT_NAME = "probs"
ACTIONS = ("enqueue", "drop", "mark")

#: Metadata keys (ONNX metadata_props).
META_CONTRACT = "aqmllm.contract"
META_FEATURES = "aqmllm.features"
META_ACTIONS = "aqmllm.actions"
META_PRODUCER = "aqmllm.producer"
META_VERSION = "aqmllm.version"
META_DESCRIPTION = "aqmllm.description"
#: Optional: the core's verdict guard the model was made for (none, step, dualpi2).
META_VERDICT_GUARD = "aqmllm.verdict_guard"
VERDICT_GUARDS = tuple(abi.VERDICT_GUARDS)

#: Standard ONNX operator domains only; anything else is a custom operator.
ALLOWED_DOMAINS = frozenset({"", "ai.onnx"})
MIN_OPSET, MAX_OPSET = 13, 21
MAX_MODEL_BYTES = 64 << 20
PROBE_BATCH = 64
#: Rows of the probe output must sum to 1 within this.
PROB_SUM_TOLERANCE = 1e-3
