"""Typed reading of Hugging Face config.json fields, with errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import GptgenError


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptgenError(f"{path} is missing") from None
    except OSError as e:
        raise GptgenError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptgenError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise GptgenError(f"{path} is not a JSON object")
    return value


class HFConfig:
    """config.json with checked accessors."""

    def __init__(self, path: Path):
        self.path = path
        self.values = read_json(path)
        # The config key each size read through `sizes` came from, for messages.
        self.size_keys: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def positive_int(self, key: str, default: int | None = None) -> int:
        value = self.values.get(key, default)
        if value is None:
            raise GptgenError(f"{self.path}: {key} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise GptgenError(f"{self.path}: {key} must be a positive integer, not {value!r}")
        return value

    def sizes(self, keys: dict[str, str]) -> dict[str, int]:
        """{field: the positive integer under config key keys[field]} (a family's names for the
        sizes, as transformers' attribute_map)."""
        self.size_keys.update(keys)
        return {name: self.positive_int(key) for name, key in keys.items()}

    def positive_float(self, key: str, default: float | None = None) -> float:
        value = self.values.get(key, default)
        if value is None:
            raise GptgenError(f"{self.path}: {key} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise GptgenError(f"{self.path}: {key} must be a positive number, not {value!r}")
        return float(value)

    def token_ids(self, key: str) -> list[int]:
        """An id or a list of ids (eos_token_id may be either); missing means none."""
        value = self.values.get(key)
        if value is None:
            return []
        ids = value if isinstance(value, list) else [value]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise GptgenError(f"{self.path}: {key} must be a token id or a list of them, not {value!r}")
        return ids
