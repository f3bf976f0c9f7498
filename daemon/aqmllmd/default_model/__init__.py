"""The models shipped with the daemon.

DEFAULT_MODEL is what aqmllmd serves when no model is set: a model that decides nothing
beyond DualPI2 (dualpi2_only.py), because no trained model passes the promotion gate on
the held-out suite (models/README.md). `make model` replaces it with a trained model
only if that model passes the gate.
STUDENT_MODEL is the AQM-LLM student that `make model` trained and distilled: the
model of the project's evaluations (sim's `llm` policy serves it unless told
otherwise), opt-in for aqmllmd (`aqmllmctl set-model`). It fails the gate.
INTERIM_MODEL is the network fitted to DualPI2's own decisions (build.py: numpy and onnx
only), the recipe's behaviour policy.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "default.onnx"
STUDENT_MODEL = HERE / "student.onnx"
INTERIM_MODEL = HERE / "interim.onnx"
