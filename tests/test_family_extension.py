"""A family added in one module (biased_llama.py) runs through the generic GGUF loader and the
engine's shared pieces (biases in the grouped Q/K/V matmul, per-head Q/K norms, NeoX RoPE),
checked against the independent NumPy forward pass in checkpoints.py."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from biased_llama import FAMILY
from checkpoints import llama_logits, random_llama_weights, write_llama_gguf

import gptgen
from gptgen import families
from gptgen.errors import GptgenError

Q = gguf.GGMLQuantizationType
N_HEAD, N_KV_HEAD, HEAD_DIM = 4, 2, 16


def _weights(rng):
    return random_llama_weights(rng, n_vocab=257, n_embd=64, n_layer=2, n_head=N_HEAD, n_kv_head=N_KV_HEAD, n_ff=96, qkv_bias=True, qk_norm=True)


@pytest.fixture(autouse=True)
def registered():
    families.register(FAMILY)
    yield


@pytest.mark.parametrize(
    "types",
    [{}, {"blk.0.attn_q.weight": Q.Q8_0, "blk.0.attn_k.weight": Q.Q8_0, "blk.0.attn_v.weight": Q.Q8_0, "blk.1.attn_q.weight": Q.Q4_1, "blk.1.attn_k.weight": Q.Q4_1, "blk.1.attn_v.weight": Q.Q4_1}],
    ids=["f32", "quantized"],
)
def test_family_from_one_module_matches_numpy_reference(tmp_path, types):
    rng = np.random.default_rng(11)
    path = tmp_path / "biased.gguf"
    stored = write_llama_gguf(path, _weights(rng), n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, n_ctx=64, types=types, arch="biased-llama")
    model = gptgen.load(str(path), threads=2)
    assert model.spec.arch == "biased-llama" and model.spec.config.qkv_bias and model.spec.config.qk_norm
    tokens = rng.integers(0, 256, size=30).tolist()
    want = llama_logits(stored, tokens, n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, pairing="halves")
    quantized = bool(types)
    # Prefill (tiles of several tokens), and decode token by token (the one-token group path).
    session = model.new_session(len(tokens))
    prefill = session.forward(tokens[:20], all_logits=True)
    steps = np.concatenate([session.forward([t]) for t in tokens[20:]])
    for got, ref in ((prefill, want[:20]), (steps, want[20:])):
        # The f16 KV cache rounds keys and values; quantized weights take 8-bit activations.
        relative = np.sqrt(((got - ref) ** 2).mean() / (ref**2).mean())
        assert relative < (0.02 if quantized else 0.002), relative
        assert (got.argmax(axis=1) == ref.argmax(axis=1)).mean() > 0.9
    # Without the biases the model is measurably different: the test sees them.
    unbiased = {k: v for k, v in stored.items() if not k.endswith(".bias")}
    other = llama_logits(unbiased, tokens, n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, pairing="halves")
    assert np.sqrt(((other - want) ** 2).mean() / (want**2).mean()) > 0.1


def test_missing_bias_is_a_clear_error(tmp_path):
    weights = _weights(np.random.default_rng(3))
    del weights["blk.1.attn_k.bias"]
    path = tmp_path / "nobias.gguf"
    write_llama_gguf(path, weights, n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, n_ctx=64, types={}, arch="biased-llama")
    with pytest.raises(GptgenError, match="missing tensor blk.1.attn_k.bias"):
        gptgen.load(str(path), threads=2)
