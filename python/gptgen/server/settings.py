"""What `gptgen serve`'s options set, as one record (no FastAPI here: the command reads it
before it checks that the server's packages are installed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .scheduler import DEFAULT_PREFILL_CHUNK


@dataclass
class Settings:
    """What `gptgen serve`'s options set (see its --help)."""

    model: Optional[str] = None  # as `generate -m` takes it; None: the default model
    threads: Optional[int] = None
    parallel: int = 8
    max_queue: int = 64
    ctx_size: Optional[int] = None  # None: the model's context
    api_key: Optional[str] = None
    cors_origins: list[str] = field(default_factory=list)
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    verbose: bool = False
