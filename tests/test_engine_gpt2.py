"""The engine on random GPT-2 shapes against the NumPy reference in checkpoints.py: odd head
counts, widths that are not a multiple of the SIMD width, f16/bf16 storage, sharded files,
prefill versus token-by-token decode, and KV cache reuse."""

from __future__ import annotations

import numpy as np
import pytest

from checkpoints import gpt2_logits, random_gpt2_weights, round_to_dtype, write_gpt2_checkpoint

from gptgen import _native
from gptgen.loading.checkpoint import load_checkpoint as load_spec

# (n_vocab, n_ctx, n_embd, n_head, n_layer, n_ff)
SHAPES = [
    (61, 40, 21, 3, 2, 84),  # head_dim 7: nothing is a multiple of 8
    (97, 33, 25, 5, 3, 37),  # odd n_ff, n_inner set explicitly
    (128, 64, 48, 1, 1, 192),  # a single head
    (300, 70, 72, 9, 2, 288),  # head_dim 8, nine heads, wider than one matmul tile
]


def build(tmp_path, shape, dtype, seed=0, shards=1, untied=False):
    n_vocab, n_ctx, n_embd, n_head, n_layer, n_ff = shape
    rng = np.random.default_rng(seed)
    weights = random_gpt2_weights(rng, n_vocab=n_vocab, n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff)
    if untied:
        weights["lm_head.weight"] = (rng.standard_normal((n_vocab, n_embd)) * 0.2).astype(np.float32)
    directory = tmp_path / f"ckpt-{dtype}-{seed}"
    write_gpt2_checkpoint(directory, weights, n_head=n_head, dtype=dtype, shards=shards, n_inner=n_ff)
    stored = {k: round_to_dtype(v, dtype) for k, v in weights.items()}
    spec = load_spec(directory)
    engine = _native.Engine(spec.config, spec.engine_tensors(), 2)
    return engine, stored, rng


def assert_close(got, want, dtype):
    # The reference computes in float64 from the same stored values; the engine in float32.
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=2e-4 * max(scale, 1.0), rtol=0)


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_prefill_matches_numpy_reference(tmp_path, shape, dtype):
    engine, stored, rng = build(tmp_path, shape, dtype)
    n_head = shape[3]
    tokens = rng.integers(0, shape[0], size=shape[1] - 3).tolist()
    logits = engine.new_session(len(tokens)).forward(tokens, all_logits=True)
    assert logits.dtype == np.float32 and logits.shape == (len(tokens), shape[0])
    assert_close(logits, gpt2_logits(stored, n_head, tokens), dtype)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_decode_step_by_step_equals_prefill(tmp_path, dtype):
    shape = SHAPES[1]
    engine, stored, rng = build(tmp_path, shape, dtype, seed=1)
    tokens = rng.integers(0, shape[0], size=20).tolist()
    prefill = engine.new_session(len(tokens)).forward(tokens, all_logits=True)
    session = engine.new_session(len(tokens))
    stepped = np.concatenate([session.forward([t]) for t in tokens])
    np.testing.assert_allclose(stepped, prefill, atol=1e-4, rtol=0)
    assert session.pos == len(tokens)


def test_kv_cache_reuse_across_calls_and_rewind(tmp_path):
    shape = SHAPES[0]
    engine, stored, rng = build(tmp_path, shape, "f32", seed=2)
    tokens = rng.integers(0, shape[0], size=30).tolist()
    want = gpt2_logits(stored, shape[3], tokens)
    session = engine.new_session(len(tokens))
    # The prompt arrives in uneven chunks; each call continues from the cache.
    chunks = [tokens[:7], tokens[7:8], tokens[8:19], tokens[19:]]
    got = np.concatenate([session.forward(c, all_logits=True) for c in chunks])
    assert_close(got, want, "f32")
    # Rewinding to 10 and feeding different tokens gives that new sequence's logits.
    session.rewind(10)
    other = rng.integers(0, shape[0], size=5).tolist()
    got = session.forward(other, all_logits=True)
    assert_close(got, gpt2_logits(stored, shape[3], tokens[:10] + other)[10:], "f32")


def test_sharded_checkpoint_and_untied_head(tmp_path):
    shape = SHAPES[3]
    engine, stored, rng = build(tmp_path, shape, "f16", seed=3, shards=3, untied=True)
    tokens = rng.integers(0, shape[0], size=12).tolist()
    logits = engine.new_session(len(tokens)).forward(tokens, all_logits=True)
    assert_close(logits, gpt2_logits(stored, shape[3], tokens), "f16")


def test_session_limits_are_errors_not_crashes(tmp_path):
    shape = SHAPES[0]
    engine, _, _ = build(tmp_path, shape, "f32", seed=4)
    session = engine.new_session(4)
    with pytest.raises(ValueError, match="exceed the session length"):
        session.forward([1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        session.forward([shape[0]])
    with pytest.raises(ValueError, match="no tokens"):
        session.forward([])
    with pytest.raises(ValueError, match="session length"):
        engine.new_session(shape[1] + 1)
    assert session.pos == 0


def test_threads_one_and_two_agree(tmp_path):
    shape = SHAPES[3]
    _, stored, rng = build(tmp_path, shape, "f32", seed=5)
    spec = load_spec(tmp_path / "ckpt-f32-5")
    tokens = rng.integers(0, shape[0], size=25).tolist()
    results = []
    for threads in (1, 2):
        engine = _native.Engine(spec.config, spec.engine_tensors(), threads)
        assert engine.threads == threads
        results.append(engine.new_session(len(tokens)).forward(tokens, all_logits=True))
    np.testing.assert_array_equal(results[0], results[1])


def test_generation_config_sets_sampling_defaults(tmp_path):
    import json

    build(tmp_path, SHAPES[0], "f32", seed=6)
    directory = tmp_path / "ckpt-f32-6"
    assert load_spec(directory).sampling_defaults.temperature == 0  # no generation_config.json: greedy
    (directory / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.7, "top_p": 0.9}))
    params = load_spec(directory).sampling_defaults
    assert (params.temperature, params.top_k, params.top_p) == (0.7, 50, 0.9)
    (directory / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.7}))
    assert load_spec(directory).sampling_defaults.temperature == 0


def test_gpt2_gguf_matches_numpy_reference(tmp_path):
    import gptgen
    from checkpoints import write_gpt2_gguf

    n_vocab, n_ctx, n_embd, n_head, n_layer, n_ff = 257, 40, 24, 3, 2, 96
    rng = np.random.default_rng(8)
    weights = random_gpt2_weights(rng, n_vocab=n_vocab, n_ctx=n_ctx, n_embd=n_embd, n_layer=n_layer, n_ff=n_ff)
    path = tmp_path / "gpt2.gguf"
    write_gpt2_gguf(path, weights, n_head=n_head, n_ctx=n_ctx)
    model = gptgen.load(str(path), threads=2)
    assert model.spec.arch == "gpt2" and model.spec.format == "gguf"
    tokens = rng.integers(0, 256, size=25).tolist()
    got = model.new_session(len(tokens)).forward(tokens, all_logits=True)
    want = gpt2_logits({k: v.astype(np.float64) for k, v in weights.items()}, n_head, tokens)
    # GGUF models keep an f16 KV cache (as llama.cpp does): errors of f16 rounding.
    relative = np.sqrt(((got - want) ** 2).mean() / (want**2).mean())
    assert relative < 2e-3, relative
