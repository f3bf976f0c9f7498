"""The models shipped with the daemon.

DEFAULT_MODEL is what aqmllmd serves when no model is set: the AQM-LLM student that
`make model` trained and installed after it passed the promotion gate (models/README.md).
INTERIM_MODEL is the network fitted to DualPI2's own decisions (build.py: numpy and onnx
only), the default until a trained model passed, and the recipe's behaviour policy.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "default.onnx"
INTERIM_MODEL = HERE / "interim.onnx"
