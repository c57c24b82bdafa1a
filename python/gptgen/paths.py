"""Where gptgen keeps what it downloads and derives: one cache directory."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$GPTGEN_HOME, else the platform's user cache directory (XDG on Linux) + gptgen."""
    home = os.environ.get("GPTGEN_HOME")
    if home:
        return Path(home).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("gptgen"))


def models_dir() -> Path:
    """Model files pulled by name."""
    return cache_dir() / "models"


def gguf_index_dir() -> Path:
    """Saved GGUF header indexes (loading/gguf_index.py)."""
    return cache_dir() / "gguf-index"


def chat_history_file() -> Path:
    """What was typed at `gptgen chat`'s prompt, kept between runs."""
    return cache_dir() / "chat-history"
