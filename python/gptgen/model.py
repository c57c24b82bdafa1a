"""A loaded model: its spec (config and weight views), tokenizer, and Rust engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import GptgenError
from .loading import ModelSpec
from .tokenizer import Tokenizer


def load_files(path: Path) -> tuple[ModelSpec, Tokenizer]:
    """Reads the model at `path` (a .gguf file or a checkpoint directory)."""
    from .loading.checkpoint import is_checkpoint_dir, load_checkpoint
    from .loading.gguf import is_gguf_file, load_gguf

    if is_checkpoint_dir(path):
        spec = load_checkpoint(path)
        return spec, Tokenizer.from_hf_dir(path, bos_id=spec.bos_token_id, eos_ids=spec.eos_token_ids)
    if path.is_dir():
        raise GptgenError(f"{path} is not a supported checkpoint directory (no config.json)")
    if is_gguf_file(path):
        return load_gguf(path)
    raise GptgenError(f"{path} is not a supported model (a .gguf file or a Hugging Face checkpoint directory)")


class Model:
    """Weights on the engine plus the tokenizer; `new_session` starts a sequence."""

    def __init__(self, spec: ModelSpec, tokenizer: Tokenizer, threads: int | None = None):
        from . import _native

        if threads is not None and threads < 1:
            raise GptgenError(f"threads must be >= 1, not {threads}")
        self.spec = spec
        self.tokenizer = tokenizer
        if tokenizer.vocab_size > spec.config["n_vocab"]:
            raise GptgenError(
                f"{spec.path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {spec.config['n_vocab']}"
            )
        try:
            self.engine = _native.Engine(spec.arch, spec.config, spec.engine_tensors(), threads or 0)
        except ValueError as e:
            raise GptgenError(f"{spec.path}: {e}") from None

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, threads: int | None = None, *, log: Callable[[str], None] = lambda _: None) -> "Model":
        """`model`: a path, a known name, or a Hugging Face repo id (see models.resolve)."""
        from .models import resolve

        spec, tokenizer = load_files(resolve(None if model is None else str(model), log=log))
        return cls(spec, tokenizer, threads)

    @property
    def n_ctx(self) -> int:
        return self.spec.n_ctx

    def new_session(self, max_seq: int):
        return self.engine.new_session(max_seq)
