"""Qwen2 and Qwen3 (families/qwen.py): tiny random GGUF files written with gguf-py and tiny
Hugging Face checkpoints, each against the independent NumPy forward in checkpoints.py (Q/K/V
biases or per-head Q/K norms, NeoX RoPE pairs in both formats)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from checkpoints import byte_vocab, llama_logits, random_llama_weights, write_llama_gguf, write_safetensors

import gptgen

N_HEAD, N_KV_HEAD = 4, 2
OPTIONS = {"qwen2": {"qkv_bias": True}, "qwen3": {"qk_norm": True}}
# GGUF names -> Hugging Face Qwen names (transformers models/qwen2, qwen3).
HF_BLOCK = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm", "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def _weights(arch: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return random_llama_weights(rng, n_vocab=257, n_embd=64, n_layer=2, n_head=N_HEAD, n_kv_head=N_KV_HEAD, n_ff=96, **OPTIONS[arch])


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.sqrt(((got - want) ** 2).mean() / (want**2).mean()))


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_tiny_gguf_matches_numpy_reference(tmp_path, arch):
    path = tmp_path / f"{arch}.gguf"
    stored = write_llama_gguf(path, _weights(arch, 5), n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, n_ctx=64, types={}, arch=arch)
    model = gptgen.load(str(path), threads=2)
    assert model.spec.arch == arch and model.spec.config.rope.pairing == "halves"
    tokens = list(np.random.default_rng(1).integers(0, 256, size=30))
    want = llama_logits(stored, tokens, n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, pairing="halves")
    got = model.new_session(len(tokens)).forward(tokens, all_logits=True)
    # The f16 KV cache rounds keys and values (as llama.cpp's does).
    assert _relative_error(got, want) < 0.002
    assert (got.argmax(axis=1) == want.argmax(axis=1)).mean() > 0.9


def _write_checkpoint(directory, arch: str, weights: dict[str, np.ndarray]) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    directory.mkdir()
    hf = {"model.embed_tokens.weight": weights["token_embd.weight"], "model.norm.weight": weights["output_norm.weight"]}
    for name, values in weights.items():
        if name.startswith("blk."):
            _, layer, module, kind = name.split(".")
            hf[f"model.layers.{layer}.{HF_BLOCK[module]}.{kind}"] = values
    write_safetensors(directory / "model.safetensors", hf, "f32")
    config = {
        "model_type": arch, "hidden_size": 64, "num_attention_heads": N_HEAD, "num_key_value_heads": N_KV_HEAD, "num_hidden_layers": 2,
        "intermediate_size": 96, "vocab_size": 257, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": True, "hidden_act": "silu",
    }
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(byte_vocab())}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(directory / "tokenizer.json"))


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_tiny_checkpoint_matches_numpy_reference(tmp_path, arch):
    weights = _weights(arch, 6)
    _write_checkpoint(tmp_path / arch, arch, weights)
    model = gptgen.load(str(tmp_path / arch), threads=2)
    assert model.spec.arch == arch and model.spec.format == "safetensors"
    tokens = list(np.random.default_rng(2).integers(0, 256, size=30))
    want = llama_logits(weights, tokens, n_head=N_HEAD, n_kv_head=N_KV_HEAD, rope_base=10000.0, pairing="halves", eps=1e-5)
    got = model.new_session(len(tokens)).forward(tokens, all_logits=True)
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())
