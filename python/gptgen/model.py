"""A loaded model: its spec (config and weight views), tokenizer, and Rust engine. Generation
runs on top of it (generate.py, session.py, api.py); this module knows nothing of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .errors import EngineError, GptgenError
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


def check_threads(threads: int | None) -> None:
    """Refuses a thread count the engine would not start (None: one per physical core)."""
    from . import _native

    if threads is not None and not 1 <= threads <= _native.MAX_THREADS:
        raise GptgenError(f"threads must be between 1 and {_native.MAX_THREADS}, not {threads}")


class Model:
    """Weights on the engine plus the tokenizer; `new_session` starts a sequence (a KV cache).
    `gptgen.load` returns an api.LanguageModel, this with the generation methods."""

    def __init__(self, spec: ModelSpec, tokenizer: Tokenizer, threads: int | None = None):
        from . import _native

        check_threads(threads)
        self.spec = spec
        self.tokenizer = tokenizer
        if tokenizer.vocab_size > spec.config.n_vocab:
            raise GptgenError(
                f"{spec.path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {spec.config.n_vocab}"
            )
        try:
            self.engine = _native.Engine(spec.config, spec.engine_tensors(), threads or 0, name=str(spec.path))
        except EngineError as e:
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

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: list[int]) -> str:
        if any(not 0 <= i < self.tokenizer.vocab_size for i in ids):
            raise GptgenError(f"token ids must be in [0, {self.tokenizer.vocab_size})")
        return self.tokenizer.decode(ids)

    def special_strings(self) -> dict[str, str]:
        """bos_token and eos_token as text, for chat templates."""
        t = self.tokenizer
        name = lambda i: t.backend.id_to_token(i) if i is not None else ""  # noqa: E731
        return {"bos_token": name(t.bos_id), "eos_token": name(t.eos_ids[0] if t.eos_ids else None)}
