"""A loaded model: its spec (config and weight views), tokenizer, and Rust engine."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import GptgenError
from .loading import ModelSpec
from .tokenizer import Tokenizer


def resolve_model_path(model: str | None) -> Path:
    """The path --model names (or $GPTGEN_MODEL), checked to exist."""
    model = model or os.environ.get("GPTGEN_MODEL")
    if not model:
        raise GptgenError("no model given: pass --model PATH (a checkpoint directory) or set GPTGEN_MODEL")
    path = Path(model).expanduser()
    if not path.exists():
        raise GptgenError(f"model path {model} does not exist")
    if not os.access(path, os.R_OK):
        raise GptgenError(f"model path {model} is not readable")
    return path


def load_spec(path: Path) -> ModelSpec:
    from .loading.checkpoint import is_checkpoint_dir, load_checkpoint

    if is_checkpoint_dir(path):
        return load_checkpoint(path)
    if path.is_dir():
        raise GptgenError(f"{path} is not a supported checkpoint directory (no config.json)")
    raise GptgenError(f"{path} is not a supported model (expected a Hugging Face checkpoint directory)")


def load_tokenizer(path: Path, spec: ModelSpec) -> Tokenizer:
    return Tokenizer.from_hf_dir(path, bos_id=spec.bos_token_id, eos_ids=spec.eos_token_ids)


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
    def load(cls, model: str | os.PathLike | None, threads: int | None = None) -> "Model":
        path = resolve_model_path(None if model is None else str(model))
        spec = load_spec(path)
        return cls(spec, load_tokenizer(path, spec), threads)

    @property
    def n_ctx(self) -> int:
        return self.spec.n_ctx

    def new_session(self, max_seq: int):
        return self.engine.new_session(max_seq)
