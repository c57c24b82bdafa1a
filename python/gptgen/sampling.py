"""Choosing the next token: one pipeline of logits processors, each a small function over a
float64 logits vector (filtered-out tokens become -inf), then a draw. Top-k narrows the
vector to its candidates: the processors after it see only those, in vocabulary order.

Order: logit bias; repetition, presence and frequency penalties over the last
`repeat_last_n` tokens; no-repeat n-grams over the whole sequence (these also shape greedy
decoding, as in Hugging Face); then, when sampling, temperature, top-k, typical-p, top-p and
min-p (Hugging Face's warper order, min-p last as in llama.cpp's chain). The parameters are
`SamplingParams` (options.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from .options import SamplingParams


# ---- processors: (logits, context) -> logits ----


def apply_logit_bias(logits: np.ndarray, bias: dict[int, float]) -> np.ndarray:
    if not bias:
        return logits
    out = logits.copy()
    for token, value in bias.items():
        if 0 <= token < out.size:
            out[token] += value
    return out


def apply_repetition_penalty(logits: np.ndarray, window: Sequence[int], penalty: float) -> np.ndarray:
    """Hugging Face: each token seen in the window has its logit divided by the penalty when
    positive and multiplied by it when negative."""
    if penalty == 1.0 or not window:
        return logits
    out = logits.copy()
    seen = np.unique(np.asarray(window))
    scores = out[seen]
    out[seen] = np.where(scores < 0, scores * penalty, scores / penalty)
    return out


def apply_presence_frequency(logits: np.ndarray, window: Sequence[int], presence: float, frequency: float) -> np.ndarray:
    """OpenAI: logit -= presence * (count > 0) + frequency * count, counts over the window."""
    if (presence == 0 and frequency == 0) or not window:
        return logits
    out = logits.copy()
    for token, count in Counter(window).items():
        out[token] -= presence + frequency * count
    return out


def banned_ngram_tokens(sequence: Sequence[int], n: int) -> set[int]:
    """Hugging Face's no_repeat_ngram_size: tokens that would complete an n-gram already in
    the sequence, given its last n - 1 tokens."""
    if n <= 0 or len(sequence) + 1 < n:
        return set()
    prefix = tuple(sequence[len(sequence) - n + 1 :]) if n > 1 else ()
    return {sequence[i + n - 1] for i in range(len(sequence) - n + 1) if tuple(sequence[i : i + n - 1]) == prefix}


def apply_no_repeat_ngram(logits: np.ndarray, sequence: Sequence[int], n: int) -> np.ndarray:
    banned = banned_ngram_tokens(sequence, n)
    if not banned:
        return logits
    out = logits.copy()
    out[list(banned)] = -np.inf
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    return logits / temperature


# Logits per block when top-k first narrows the vocabulary by block maxima.
_TOP_K_BLOCK = 128


def top_k_candidates(logits: np.ndarray, k: int) -> np.ndarray | None:
    """The indices, in increasing order, of the k highest logits (ties at the k-th value kept
    too, as in Hugging Face); None when top-k is off or keeps everything."""
    if k <= 0 or k >= logits.size:
        return None
    blocks = logits.size // _TOP_K_BLOCK
    if blocks >= k:
        # The k-th largest block maximum bounds the k-th largest logit from below (the k
        # blocks above it hold k logits at least that large), so only logits reaching it need
        # the exact selection: tens of them instead of the whole vocabulary.
        maxima = logits[: blocks * _TOP_K_BLOCK].reshape(blocks, _TOP_K_BLOCK).max(axis=1)
        reach = np.flatnonzero(logits >= np.partition(maxima, -k)[-k])
    else:
        reach = np.arange(logits.size)
    kth = np.partition(logits[reach], -k)[-k]
    return reach[logits[reach] >= kth]


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keeps the most probable tokens whose cumulative probability first reaches p (at least one)."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = softmax(logits[order])
    # Token i survives if the mass before it is still below p.
    keep_sorted = (np.cumsum(probs) - probs) < p
    keep_sorted[0] = True
    return _keep(logits, order[keep_sorted])


def min_p_filter(logits: np.ndarray, min_p: float) -> np.ndarray:
    """llama.cpp / HF: keeps tokens whose probability is at least min_p times the largest."""
    if min_p <= 0:
        return logits
    probs = softmax(logits)
    return np.where(probs < min_p * probs.max(), -np.inf, logits)


def typical_filter(logits: np.ndarray, mass: float) -> np.ndarray:
    """Hugging Face's typical-p: tokens ordered by how far their surprise is from the
    distribution's entropy, kept until their probability mass first exceeds `mass`."""
    if mass >= 1.0:
        return logits
    log_probs = log_softmax(logits)
    probs = np.exp(log_probs)
    entropy = -np.nansum(probs * log_probs)
    order = np.argsort(np.abs(-log_probs - entropy), kind="stable")
    cumulative = np.cumsum(probs[order])
    last = min(int(np.searchsorted(cumulative, mass, side="right")), logits.size - 1)
    return _keep(logits, order[: last + 1])


def _keep(logits: np.ndarray, kept: np.ndarray) -> np.ndarray:
    out = np.full_like(logits, -np.inf)
    out[kept] = logits[kept]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = _shifted(logits)
    return shifted - np.log(np.sum(np.exp(shifted)))


def token_logprob(logits: np.ndarray, token: int) -> float:
    """log_softmax(logits)[token], exactly, without building the whole array (a vocabulary's
    worth of float64 temporaries per token: ~0.5 ms against ~0.07)."""
    shifted = _shifted(logits)
    chosen = shifted[token]
    return float(chosen - np.log(np.sum(np.exp(shifted, out=shifted))))


def _shifted(logits: np.ndarray) -> np.ndarray:
    """logits - max(logits), in a new float64 array."""
    shifted = logits.astype(np.float64)
    shifted -= shifted.max()
    return shifted


class Sampler:
    """Draws tokens under `params` (llama.cpp's defaults where they set nothing) from its own
    seeded random stream."""

    def __init__(self, params: SamplingParams):
        self.params = params.resolved()
        self.rng = np.random.default_rng(self.params.seed)

    def process(self, logits: np.ndarray, sequence: Sequence[int]) -> np.ndarray:
        """The logits after every processor that applies to greedy decoding too, in float64;
        `sequence` is the prompt and the tokens generated so far. Where none applies, the
        logits as they are (a float64 copy of a large vocabulary costs more than the rest of a
        step's sampling)."""
        p = self.params
        window = sequence if p.repeat_last_n == -1 else sequence[max(0, len(sequence) - p.repeat_last_n) :] if p.repeat_last_n else []
        penalised = window and (p.repetition_penalty != 1 or p.presence_penalty != 0 or p.frequency_penalty != 0)
        if not (p.logit_bias or penalised or p.no_repeat_ngram_size):
            return logits
        scores = apply_logit_bias(logits.astype(np.float64), p.logit_bias)
        scores = apply_repetition_penalty(scores, window, p.repetition_penalty)
        scores = apply_presence_frequency(scores, window, p.presence_penalty, p.frequency_penalty)
        return apply_no_repeat_ngram(scores, sequence, p.no_repeat_ngram_size)

    def distribution(self, logits: np.ndarray, sequence: Sequence[int] = ()) -> tuple[np.ndarray | None, np.ndarray]:
        """When sampling (temperature > 0): the distribution the next token is drawn from, as
        (candidates, weights): weights over the token ids `candidates` (increasing), or over the
        whole vocabulary when candidates is None. Weights are softmax outputs: they sum to 1
        up to rounding."""
        p = self.params
        scores = self.process(logits, sequence)
        # Only top-k's candidates can survive: the temperature, the later filters and the draw
        # look at them alone (in vocabulary order), not at the whole vocabulary. Dividing by the
        # temperature keeps the order (and ties), so top-k may come first.
        candidates = top_k_candidates(scores, p.top_k)
        if candidates is not None:
            scores = scores[candidates]
        scores = apply_temperature(scores.astype(np.float64), p.temperature)
        scores = typical_filter(scores, p.typical_p)
        scores = top_p_filter(scores, p.top_p)
        scores = min_p_filter(scores, p.min_p)
        return candidates, softmax(scores)

    def __call__(self, logits: np.ndarray, sequence: Sequence[int] = ()) -> int:
        if self.params.temperature == 0:
            return int(np.argmax(self.process(logits, sequence)))
        candidates, weights = self.distribution(logits, sequence)
        return _token_at(candidates, self._draw(weights))

    def verify(self, logits: np.ndarray, sequence: Sequence[int], draft: int) -> int:
        """The next token, given that a draft proposed `draft` (speculative decoding). Greedy:
        the argmax, as __call__ gives. Sampling: `draft` with its probability p(draft), else a
        draw from the distribution without it, renormalised: for a draft that proposes one
        token for certain this is speculative sampling's rule (accept with min(1, p/q), resample
        from max(0, p - q)), and the token is distributed exactly as __call__'s."""
        if self.params.temperature == 0:
            return self(logits, sequence)
        candidates, weights = self.distribution(logits, sequence)
        place = draft if candidates is None else int(np.searchsorted(candidates, draft))
        proposed = place < weights.size and _token_at(candidates, place) == draft
        chance = weights[place] / weights.sum() if proposed else 0.0
        if self.rng.random() < chance:
            return draft
        rest = weights.copy()
        if proposed:
            rest[place] = 0.0
        if not rest.sum() > 0:  # the draft held all the mass; only rounding refused it
            return draft
        return _token_at(candidates, self._draw(rest))

    def _draw(self, weights: np.ndarray) -> int:
        """An index drawn with probability proportional to `weights`. Inverse-CDF: one uniform
        number per token keeps the stream reproducible."""
        index = int(np.searchsorted(np.cumsum(weights), self.rng.random() * weights.sum(), side="right"))
        return min(index, weights.size - 1)


def _token_at(candidates: np.ndarray | None, index: int) -> int:
    return index if candidates is None else int(candidates[index])
