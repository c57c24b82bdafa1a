"""Llama-family models: the Hugging Face tiny-llama reference, GGUF files written by gguf-py
against the NumPy reference (adjacent RoPE pairs, quantized tensors), and the dequantizers
against gguf-py's."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize, quantize

from checkpoints import llama_logits, random_llama_weights, write_llama_gguf
from conftest import FIXTURES

import gptgen
from gptgen import _native
from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams

TINY_LLAMA = FIXTURES / "tiny-llama"
Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def tiny_llama():
    return gptgen.load(str(TINY_LLAMA), threads=2)


@pytest.mark.parametrize("i", range(3))
def test_tiny_llama_matches_transformers(tiny_llama, i):
    p = json.loads((TINY_LLAMA / "expected.json").read_text())["prompts"][i]
    assert tiny_llama.tokenizer.encode(p["prompt"]) == p["ids"]
    logits = tiny_llama.new_session(len(p["ids"])).forward(p["ids"])[0]
    np.testing.assert_allclose(logits[p["last_top10_ids"]], p["last_top10_logits"], atol=1e-4, rtol=0)
    result = generate(tiny_llama, GenerationRequest(p["ids"], 20, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == p["greedy20"]


def _tiny_llama_weights() -> dict[str, np.ndarray]:
    """tiny-llama's weights under GGUF names, mapped by hand (not by the loader under test)."""
    from safetensors.numpy import load_file

    raw = load_file(str(TINY_LLAMA / "model.safetensors"))
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    weights = {}
    for name, values in raw.items():
        if name in names:
            weights[names[name]] = values
        else:
            layer, part = name.split(".")[2], ".".join(name.split(".")[3:-1])
            weights[f"blk.{layer}.{parts[part]}.weight"] = values
    return weights


def test_hf_llama_safetensors_match_numpy_reference(tiny_llama):
    """The same weights through gptgen's loader and the NumPy reference (rotate-half pairs)."""
    weights = _tiny_llama_weights()
    tokens = list(range(100, 140))
    want = llama_logits(weights, tokens, n_head=4, n_kv_head=2, rope_base=10000.0, pairing="halves")
    got = tiny_llama.new_session(len(tokens)).forward(tokens, all_logits=True)
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize(
    "types",
    [
        {},
        {"blk.0.attn_q.weight": Q.F16, "blk.1.ffn_down.weight": Q.F16, "token_embd.weight": Q.F16},
        {"blk.0.attn_q.weight": Q.Q8_0, "blk.0.ffn_up.weight": Q.Q4_1, "blk.1.attn_v.weight": Q.Q4_0, "token_embd.weight": Q.Q8_0},
    ],
    ids=["f32", "f16", "quantized"],
)
def test_gguf_llama_matches_numpy_reference(tmp_path, types):
    rng = np.random.default_rng(7)
    weights = random_llama_weights(rng, n_vocab=257, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, n_ff=96)
    path = tmp_path / "tiny.gguf"
    stored = write_llama_gguf(path, weights, n_head=4, n_kv_head=2, rope_base=10000.0, n_ctx=64, types=types)
    model = gptgen.load(str(path), threads=2)
    assert model.spec.config.rope.pairing == "adjacent"
    tokens = rng.integers(0, 256, size=30).tolist()
    want = llama_logits(stored, tokens, n_head=4, n_kv_head=2, rope_base=10000.0, pairing="adjacent")
    got = model.new_session(len(tokens)).forward(tokens, all_logits=True)
    # The f16 KV cache rounds keys and values; quantized weights also take 8-bit activations,
    # which moves logits by about 1% of their spread (measured: 0.16 out of 6 at worst).
    quantized = any(t not in (Q.F32, Q.F16) for t in types.values())
    relative = np.sqrt(((got - want) ** 2).mean() / (want**2).mean())
    assert relative < (0.02 if quantized else 0.002), relative
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() > 0.9


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0])
def test_dequantize_matches_gguf_py_on_quantized_blocks(qtype):
    rng = np.random.default_rng(int(qtype))
    values = (rng.standard_normal((6, 256)) * rng.uniform(0.01, 3, size=(6, 1))).astype(np.float32)
    blocks = quantize(values, qtype)
    ours = _native.dequantize(np.ascontiguousarray(blocks).reshape(-1).view(np.uint8), qtype.name.lower(), 256)
    np.testing.assert_array_equal(ours.reshape(6, 256), dequantize(blocks, qtype))


@pytest.mark.parametrize("qtype, size", [(Q.Q4_K, 144), (Q.Q5_K, 176), (Q.Q6_K, 210)])
def test_dequantize_k_quants_matches_gguf_py(qtype, size):
    """gguf-py cannot quantize K-quants, so: random blocks with sane f16 scales."""
    rng = np.random.default_rng(size)
    raw = rng.integers(0, 256, size=(8, size), dtype=np.uint8)
    # d (and dmin, for Q4_K and Q5_K) are f16 fields
    scale_offset, scale_bytes = (208, 2) if qtype == Q.Q6_K else (0, 4)
    scales = rng.uniform(1e-3, 0.05, size=(8, 2)).astype(np.float16).view(np.uint8)
    raw[:, scale_offset : scale_offset + scale_bytes] = scales[:, :scale_bytes]
    ours = _native.dequantize(raw.reshape(-1), qtype.name.lower(), 256)
    np.testing.assert_array_equal(ours, dequantize(raw, qtype).reshape(-1))


def test_conversation_reuses_the_cached_prefix(tiny_llama):
    from gptgen.generate import Conversation

    first = tiny_llama.tokenizer.encode("<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n")
    second = first + tiny_llama.tokenizer.encode("hi!<|im_end|>\n<|im_start|>user\nand again<|im_end|>\n")
    conversation = Conversation(tiny_llama)
    conversation.prefill(first)
    reused = conversation.prefill(second)
    assert conversation.session.pos == len(second)
    fresh = tiny_llama.new_session(len(second)).forward(second)[0]
    np.testing.assert_array_equal(reused, fresh)
    # A prompt that diverges earlier rewinds the cache to the common prefix.
    other = first[:5] + tiny_llama.tokenizer.encode(" something else")
    np.testing.assert_array_equal(conversation.prefill(other), tiny_llama.new_session(len(other)).forward(other)[0])


# Llama 3.1's rope_scaling, with a short original context so that the test's positions reach
# every kind of pair (kept, divided by the factor, blended).
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def _llama3_inv_freq(base: float, dims: int, scaling: dict) -> np.ndarray:
    """transformers' `llama3` inverse frequencies (modeling_rope_utils), in float64."""
    inv_freq = 1.0 / base ** (np.arange(0, dims, 2) / dims)
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return np.where(medium, blended, scaled)


def test_gguf_rope_freqs_and_linear_scaling_match_numpy_reference(tmp_path):
    rng = np.random.default_rng(17)
    weights = random_llama_weights(rng, n_vocab=257, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, n_ff=96)
    inv_freq = _llama3_inv_freq(10000.0, 16, LLAMA3_SCALING)
    base_freq = 1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)
    # GGUF carries llama3 scaling as divisors of each pair's angle.
    weights["rope_freqs.weight"] = (base_freq / inv_freq).astype(np.float32)
    tokens = rng.integers(0, 256, size=40).tolist()
    for linear in (None, 4.0):
        path = tmp_path / f"scaled-{linear}.gguf"
        stored = write_llama_gguf(path, weights, n_head=4, n_kv_head=2, rope_base=10000.0, n_ctx=64, types={}, linear_rope_factor=linear)
        del stored["rope_freqs.weight"]
        want_freq = base_freq / stored_factors(path) / (linear or 1.0)
        want = llama_logits(stored, tokens, n_head=4, n_kv_head=2, rope_base=10000.0, pairing="adjacent", inv_freq=want_freq)
        got = gptgen.load(str(path), threads=2).new_session(len(tokens)).forward(tokens, all_logits=True)
        relative = np.sqrt(((got - want) ** 2).mean() / (want**2).mean())
        assert relative < 0.002, (linear, relative)
        plain = llama_logits(stored, tokens, n_head=4, n_kv_head=2, rope_base=10000.0, pairing="adjacent")
        assert np.sqrt(((plain - want) ** 2).mean() / (want**2).mean()) > 0.01  # the scaling is visible


def stored_factors(path) -> np.ndarray:
    reader = gguf.GGUFReader(path)
    return np.asarray(next(t for t in reader.tensors if t.name == "rope_freqs.weight").data, dtype=np.float64)


def _with_rope(tmp_path, name: str, scaling: dict, style: str):
    """tiny-llama with `scaling` written as transformers 5 writes it (rope_parameters) or as
    earlier versions did (rope_theta and rope_scaling)."""
    import shutil

    directory = tmp_path / name
    shutil.copytree(TINY_LLAMA, directory)
    config = json.loads((directory / "config.json").read_text())
    theta = config.pop("rope_parameters")["rope_theta"]
    if style == "rope_parameters":
        config["rope_parameters"] = {**scaling, "rope_theta": theta}
    else:
        config.update(rope_theta=theta, rope_scaling=scaling)
    (directory / "config.json").write_text(json.dumps(config))
    return directory, config


@pytest.mark.parametrize("style", ["rope_parameters", "rope_scaling"])
def test_hf_llama3_rope_scaling_matches_numpy_reference(tmp_path, style):
    directory, config = _with_rope(tmp_path, "llama3", LLAMA3_SCALING, style)
    weights = _tiny_llama_weights()
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = _llama3_inv_freq(10000.0, head_dim, LLAMA3_SCALING)
    tokens = list(range(100, 160))
    want = llama_logits(weights, tokens, n_head=4, n_kv_head=2, rope_base=10000.0, pairing="halves", inv_freq=inv_freq)
    model = gptgen.load(str(directory), threads=2)
    got = model.new_session(len(tokens)).forward(tokens, all_logits=True)
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())
    plain = llama_logits(weights, tokens, n_head=4, n_kv_head=2, rope_base=10000.0, pairing="halves")
    assert np.abs(plain - want).max() > 10 * 2e-4 * np.abs(want).max()  # the scaling is visible


@pytest.mark.parametrize("style", ["rope_parameters", "rope_scaling"])
def test_unknown_rope_scaling_is_one_line_error(tmp_path, style):
    from conftest import run_cli

    directory, _ = _with_rope(tmp_path, "dynamic", {"rope_type": "dynamic", "factor": 2.0}, style)
    out = run_cli("generate", "hi", "-m", str(directory), "-n", "1")
    err = out.stderr.decode()
    assert out.returncode == 1 and err.startswith("error: ") and err.count("\n") == 1 and "'dynamic' is not supported" in err, err
