"""Bundled models. `default/` is the model used when --model is not given."""

from pathlib import Path

__all__ = ["DEFAULT_MODEL_DIR"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default"
