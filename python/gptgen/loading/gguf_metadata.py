"""GGUF key/values with typed, checked accessors: what a family reads its configuration from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GptgenError


class GGUFMetadata:
    """The metadata of one GGUF file. `arch` is its `general.architecture`; `key(name)` the
    architecture's own key for `name` (e.g. "llama.embedding_length")."""

    def __init__(self, path: Path, fields: dict[str, Any]):
        self.path = path
        self.fields = fields
        self.arch = self.get("general.architecture")

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception:
            raise GptgenError(f"{self.path}: metadata {key} cannot be read") from None

    def positive_int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        if value is None:
            raise GptgenError(f"{self.path}: metadata {key} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise GptgenError(f"{self.path}: metadata {key} must be a positive integer, not {value!r}")
        return int(value)

    def positive_float(self, key: str, default: float | None = None) -> float:
        value = self.get(key, default)
        if value is None:
            raise GptgenError(f"{self.path}: metadata {key} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < float("inf"):
            raise GptgenError(f"{self.path}: metadata {key} must be a positive number, not {value!r}")
        return float(value)

    def string_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GptgenError(f"{self.path}: metadata {key} must be a list of strings")
        return value

    def sizes(self) -> dict[str, int]:
        """The sizes every GGUF architecture stores under the same keys, as EngineConfig
        fields (head_dim: `attention.key_length`, else n_embd / n_head)."""
        n_embd = self.positive_int(self.key("embedding_length"))
        n_head = self.positive_int(self.key("attention.head_count"))
        return {
            "n_ctx": self.positive_int(self.key("context_length")),
            "n_embd": n_embd,
            "n_layer": self.positive_int(self.key("block_count")),
            "n_head": n_head,
            "n_kv_head": self.positive_int(self.key("attention.head_count_kv"), n_head),
            "n_ff": self.positive_int(self.key("feed_forward_length")),
            "head_dim": self.positive_int(self.key("attention.key_length"), n_embd // n_head),
        }
