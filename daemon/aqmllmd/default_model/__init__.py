"""The interim default model shipped with the daemon (see build.py)."""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "default.onnx"
