"""Turning model files into a `ModelSpec`: configuration plus zero-copy weight views."""

from .spec import ModelSpec, TensorView

__all__ = ["ModelSpec", "TensorView"]
