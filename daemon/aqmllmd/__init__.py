"""aqmllmd: the AQM-LLM inference daemon (serving only: it never imports torch)."""

__version__ = "0.1.0"
