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


def check_threads(threads: int | None) -> None:
    """Refuses a thread count the engine would not start (None: one per physical core)."""
    from . import _native

    if threads is not None and not 1 <= threads <= _native.MAX_THREADS:
        raise GptgenError(f"threads must be between 1 and {_native.MAX_THREADS}, not {threads}")


class Model:
    """Weights on the engine plus the tokenizer; `new_session` starts a sequence."""

    def __init__(self, spec: ModelSpec, tokenizer: Tokenizer, threads: int | None = None):
        from . import _native

        check_threads(threads)
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

    # ---- the Python API ----

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

    def start(self, prompt, *, options=None, **kwargs):
        """A TextRun for `prompt` (text, or chat messages [{"role", "content"}])."""
        from .api import GenerateOptions, TextRun
        from .generate import Generation

        options = (options or GenerateOptions()).with_changes(**kwargs)
        return TextRun(Generation(self, options.request(self, prompt)))

    def generate(self, prompt, *, options=None, **kwargs):
        """Generates from `prompt` (text, or chat messages) and returns a GenerationResult
        (str() of it is the text). Keyword arguments: GenerateOptions fields and
        SamplingParams names, e.g. max_tokens=32, temperature=0, stop=["\\n"]."""
        from .api import GenerateOptions
        from .generate import generate

        options = (options or GenerateOptions()).with_changes(**kwargs)
        return generate(self, options.request(self, prompt))

    def generate_batch(self, prompts: list, *, options=None, **kwargs) -> list:
        """Generates from every prompt together (one forward pass per step for all of them) and
        returns the GenerationResults in order. With greedy decoding the tokens are the same as
        separate `generate` calls give; a seed s gives prompt i the seed s + i."""
        from .api import GenerateOptions
        from .generate import generate_batch

        options = (options or GenerateOptions()).with_changes(**kwargs)
        seed = options.sampling.get("seed")
        requests = [options.with_seed(None if seed is None else seed + i).request(self, p) for i, p in enumerate(prompts)]
        results: list = [None] * len(requests)
        for i, result in generate_batch(self, requests):
            results[i] = result
        return results

    def stream(self, prompt, *, options=None, **kwargs):
        """Yields the generated text in pieces as it is produced."""
        yield from self.start(prompt, options=options, **kwargs).pieces()

    def chat(self, messages: list[dict[str, str]], **kwargs):
        """One assistant reply to `messages`, rendered with the model's chat template."""
        return self.generate(list(messages), **kwargs)
