"""Choosing the next token from the logits.

Each step of the pipeline is a small function over a float64 logits vector; filtered-out
tokens get -inf. The order is Hugging Face's: temperature, then top-k, then top-p.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .errors import GptgenError


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy; top_k 0 and top_p 1 mean no filtering. The defaults are
    llama.cpp's; a model's own defaults (generation_config.json) take precedence over them."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    seed: int | None = None

    def with_overrides(self, **values: float | int | None) -> "SamplingParams":
        """These parameters with every value that is not None replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def validate(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature >= 0):
            raise GptgenError(f"temperature must be a number >= 0, not {self.temperature}")
        if self.top_k < 0:
            raise GptgenError(f"top-k must be >= 0, not {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise GptgenError(f"top-p must be in (0, 1], not {self.top_p}")


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    return logits / temperature


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keeps the k highest logits (ties at the k-th value kept too, as in Hugging Face)."""
    if k <= 0 or k >= logits.size:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keeps the most probable tokens whose cumulative probability first reaches p (at least one)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = softmax(logits[order])
    cumulative = np.cumsum(probs)
    # Token i survives if the mass before it is still below p.
    keep_sorted = (cumulative - probs) < p
    keep_sorted[0] = True
    filtered = np.full_like(logits, -np.inf)
    kept = order[keep_sorted]
    filtered[kept] = logits[kept]
    return filtered


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - np.max(logits)
    return shifted - np.log(np.sum(np.exp(shifted)))


class Sampler:
    """Draws tokens under `params` from its own seeded random stream."""

    def __init__(self, params: SamplingParams):
        params.validate()
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        if p.temperature == 0:
            return int(np.argmax(logits))
        scores = apply_temperature(logits.astype(np.float64), p.temperature)
        scores = top_k_filter(scores, p.top_k)
        scores = top_p_filter(scores, p.top_p)
        probs = softmax(scores)
        # Inverse-CDF draw: one uniform number per token keeps the stream reproducible.
        index = int(np.searchsorted(np.cumsum(probs), self.rng.random() * probs.sum(), side="right"))
        return min(index, probs.size - 1)
