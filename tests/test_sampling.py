"""Each sampling step against a direct NumPy statement of its definition."""

from __future__ import annotations

import numpy as np
import pytest

from gptgen.errors import GptgenError
from gptgen.sampling import Sampler, SamplingParams, log_softmax, token_logprob, top_k_candidates, top_p_filter


def test_top_k_keeps_exactly_the_k_largest():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(1000)
    for k in (1, 5, 999):
        kept = top_k_candidates(logits, k)
        assert set(kept) == set(np.argsort(-logits)[:k])
    assert top_k_candidates(logits, 0) is None  # off: every token stays a candidate


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    rng = np.random.default_rng(1)
    for _ in range(20):
        logits = rng.standard_normal(50) * 3
        p = rng.uniform(0.05, 0.99)
        probs = np.exp(logits) / np.exp(logits).sum()
        order = np.argsort(-probs)
        # Smallest n with sum of the n largest probabilities >= p.
        n = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)
        kept = np.flatnonzero(np.isfinite(top_p_filter(logits, p)))
        assert set(kept) == set(order[:n])


def test_log_softmax_matches_definition():
    logits = np.array([1.0, 2.0, 3.0, -30.0], dtype=np.float32)
    expected = np.log(np.exp(logits.astype(np.float64)) / np.exp(logits.astype(np.float64)).sum())
    np.testing.assert_allclose(log_softmax(logits), expected, atol=1e-12)


def test_token_logprob_is_log_softmax_at_the_token_exactly():
    rng = np.random.default_rng(4)
    for logits in [
        (rng.standard_normal(49152) * 8).astype(np.float32),
        np.array([1.0, 2.0, 3.0, -30.0, -np.inf, 88.0], dtype=np.float32),
        np.array([-1e30, 5.0, 5.0, -np.inf], dtype=np.float32),
    ]:
        full = log_softmax(logits)
        for token in [0, 1, 3, int(np.argmax(logits)), logits.size - 1]:
            assert token_logprob(logits, token) == full[token]


def test_greedy_is_argmax():
    logits = np.array([0.1, 5.0, 4.9], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0))(logits) == 1


def test_seeded_sampling_is_reproducible_and_follows_the_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    draws = [Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=7)) for _ in range(2)]
    a = [draws[0](logits) for _ in range(4000)]
    b = [draws[1](logits) for _ in range(4000)]
    assert a == b
    freq = np.bincount(a, minlength=3) / len(a)
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.03)


def test_top_k_one_is_greedy_under_sampling():
    rng = np.random.default_rng(3)
    sampler = Sampler(SamplingParams(temperature=1.5, top_k=1, seed=0))
    for _ in range(20):
        logits = rng.standard_normal(100)
        assert sampler(logits) == int(np.argmax(logits))


@pytest.mark.parametrize(
    "params", [dict(temperature=-1), dict(temperature=float("nan")), dict(top_p=0), dict(top_p=1.5), dict(top_k=-2)]
)
def test_invalid_parameters_are_rejected(params):
    with pytest.raises(GptgenError):
        SamplingParams(**params)  # checked when made


def test_top_k_over_a_vocabulary_matches_the_full_sort_with_ties():
    rng = np.random.default_rng(5)
    for size in (49152, 50257, 129):
        # Rounded logits: many ties, also at the k-th value.
        logits = np.round(rng.standard_normal(size) * 4, 1)
        logits[rng.integers(0, size, 20)] = -np.inf
        for k in (1, 40, 50, 100):
            expected = np.flatnonzero(logits >= np.sort(logits)[-k])
            np.testing.assert_array_equal(top_k_candidates(logits, k), expected)
        assert top_k_candidates(logits, size) is None and top_k_candidates(logits, 0) is None
