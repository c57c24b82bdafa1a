"""Perplexity by llama.cpp's method (tools/perplexity): the text cut into chunks of n_ctx
tokens, each evaluated from a fresh cache, only the second half of each chunk scored."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import GptgenError
from .model import Model
from .sampling import token_logprob


@dataclass
class PerplexityResult:
    ppl: float
    ppl_stderr: float
    n_tokens: int
    n_ctx: int
    chunks: int
    scored: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def perplexity(
    model: Model, text: str, n_ctx: int = 512, max_chunks: int | None = None, progress: Callable[[int, int], None] = lambda done, total: None
) -> PerplexityResult:
    """`max_chunks`: score only the first chunks (llama-perplexity's --chunks); `progress(done,
    total)` is told of each chunk evaluated."""
    # As llama-perplexity: the chunks are cut from the text's tokens with the BOS its tokenizer
    # adds (when it adds one), and each chunk's first token is then replaced by the BOS.
    tokens = model.tokenizer.encode(text)
    if n_ctx < 4 or n_ctx > model.n_ctx:
        raise GptgenError(f"--ctx must be between 4 and the model's context {model.n_ctx}, not {n_ctx}")
    if max_chunks is not None and max_chunks < 1:
        raise GptgenError(f"--chunks must be at least 1, not {max_chunks}")
    chunks = len(tokens) // n_ctx
    if chunks == 0:
        raise GptgenError(f"the text is {len(tokens)} tokens; perplexity needs at least one chunk of {n_ctx}")
    chunks = min(chunks, max_chunks or chunks)
    first = n_ctx // 2
    nll = []
    progress(0, chunks)
    for c in range(chunks):
        chunk = tokens[c * n_ctx : (c + 1) * n_ctx]
        if model.tokenizer.add_bos and model.tokenizer.bos_id is not None:
            chunk[0] = model.tokenizer.bos_id
        logits = model.new_session(n_ctx).forward(chunk, all_logits=True)
        for i in range(first, n_ctx - 1):
            nll.append(-token_logprob(logits[i], chunk[i + 1]))
        progress(c + 1, chunks)
    values = np.array(nll, dtype=np.float64)
    mean, mean_sq = values.mean(), (values**2).mean()
    ppl = math.exp(mean)
    stderr = math.sqrt(max(mean_sq - mean * mean, 0.0) / (len(values) - 1)) if len(values) > 1 else 0.0
    return PerplexityResult(ppl=ppl, ppl_stderr=stderr * ppl, n_tokens=len(tokens), n_ctx=n_ctx, chunks=chunks, scored=len(values))
