"""Llama (llama.cpp src/models/llama.cpp, transformers modeling_llama.py), and the models
built like it (SmolLM2, Llama 2, TinyLlama, Mistral; GGUF files of the last three carry
SentencePiece vocabularies): RMSNorm, RoPE, grouped-query attention, a SwiGLU feed-forward; the
engine's `llama` forward (rust/model/llama.rs)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import GptgenError
from ..loading.config import EngineConfig, RopeConfig, SlidingWindow
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig
from .base import Family, HFTensorNames, PreTokenizer


def gguf_rope(meta: GGUFMetadata, head_dim: int, pairing: str) -> RopeConfig:
    """The file's RoPE settings: linear scaling as a frequency scale, YaRN as llama.cpp sets it
    up (Llama 3's per-pair factors come as the `rope_freqs.weight` tensor, which the GGUF loader
    reads); other scalings are refused."""
    scaling = meta.get(meta.key("rope.scaling.type"), "none")
    factor = meta.positive_float(meta.key("rope.scaling.factor"), 1.0)
    if scaling not in ("none", "linear", "yarn") or (scaling == "none" and factor != 1.0):
        raise GptgenError(f"{meta.path}: RoPE scaling {scaling!r} is not supported (linear, yarn, and Llama 3's rope_freqs)")
    rope = RopeConfig(
        base=meta.positive_float(meta.key("rope.freq_base"), 10000.0),
        dims=meta.positive_int(meta.key("rope.dimension_count"), head_dim),
        pairing=pairing,
        freq_scale=float(np.float32(1.0) / np.float32(factor)),
        attn_factor=meta.positive_float(meta.key("rope.scaling.attn_factor"), 1.0),
    )
    if scaling != "yarn":
        return rope
    return yarn_rope(
        rope,
        original_context=meta.positive_int(meta.key("rope.scaling.original_context_length"), meta.positive_int(meta.key("context_length"))),
        ext_factor=meta.positive_float(meta.key("rope.scaling.yarn_ext_factor"), 1.0),
        beta_fast=meta.positive_float(meta.key("rope.scaling.yarn_beta_fast"), 32.0),
        beta_slow=meta.positive_float(meta.key("rope.scaling.yarn_beta_slow"), 1.0),
        # llama.cpp takes the log multiplier as mscale_all_dim, with mscale 1.
        mscale_all_dim=float(meta.get(meta.key("rope.scaling.yarn_log_multiplier"), 0.0)),
    )


def yarn_rope(
    rope: RopeConfig,
    *,
    original_context: int,
    ext_factor: float = 1.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    mscale: float = 1.0,
    mscale_all_dim: float = 0.0,
    attention: float | None = None,
    truncate: bool = True,
) -> RopeConfig:
    """`rope` (its freq_scale 1 / factor) with YaRN in llama.cpp's float32 arithmetic: the
    correction range of pairs (ggml_rope_yarn_corr_dims; not rounded out without `truncate`)
    and the attention factor (llama_context's and transformers': get_mscale(mscale) over
    get_mscale(mscale_all_dim) where the latter is set, else get_mscale(1); or `attention`
    where a config gives it), over 1 + 0.1 ln(factor), which rope_yarn multiplies back."""
    f32 = np.float32
    factor = f32(1.0) / f32(rope.freq_scale)

    def corr_dim(n_rot: float) -> np.float32:
        return f32(rope.dims) * np.log(f32(original_context) / (f32(n_rot) * f32(2) * f32(math.pi))) / (f32(2) * np.log(f32(rope.base)))

    def get_mscale(m: float) -> np.float32:
        return f32(1.0) if factor <= 1 else f32(0.1) * f32(m) * np.log(factor) + f32(1.0)

    if attention is None:
        attention = get_mscale(mscale) / get_mscale(mscale_all_dim) if mscale_all_dim else get_mscale(1.0)
    attn = f32(attention) * (f32(1.0) / (f32(1.0) + f32(0.1) * np.log(factor))) * f32(rope.attn_factor)
    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if truncate:
        low, high = np.floor(low), np.ceil(high)
    low, high = max(0.0, float(low)), min(rope.dims - 1.0, float(high))
    return replace(rope, ext_factor=ext_factor, corr_dims=(low, high), attn_factor=float(attn))


def llama3_factors(scaling: dict, base: float, dims: int) -> tuple[float, ...]:
    """Llama 3.1's per-pair divisors of the RoPE angle, as llama.cpp's converter derives
    `rope_freqs.weight` from config.json's rope_scaling (transformers' `llama3` rope_type):
    1 for high frequencies, `factor` for low ones, a smooth blend between."""
    factor, low, high = (float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    old_context = float(scaling["original_max_position_embeddings"])
    factors = []
    for i in range(0, dims, 2):
        wavelen = 2 * math.pi * base ** (i / dims)
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return tuple(float(np.float32(f)) for f in factors)


def gguf_config(meta: GGUFMetadata, common: dict[str, Any], *, pairing: str, **options: bool) -> EngineConfig:
    """The engine's `llama` forward for a GGUF file of a Llama-shaped family: RoPE pairs as
    `pairing` says, `options` the EngineConfig flags the family sets (qkv_bias, qk_norm)."""
    return EngineConfig(
        arch="llama",
        **common,
        norm_eps=meta.positive_float(meta.key("attention.layer_norm_rms_epsilon")),
        rope=gguf_rope(meta, common["head_dim"], pairing),
        **options,
    )


def _gguf_config(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    # llama.cpp's converter permutes the Q and K rows of `llama` files into adjacent pairs.
    return gguf_config(meta, common, pairing="adjacent")


def _hf_config(config: HFConfig) -> EngineConfig:
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise GptgenError(f"{config.path}: {flag} = true is not supported")
    engine = hf_config(config)
    # Mistral is Llama with, in its first release, a sliding window on every layer.
    if config.get("model_type") == "mistral" and config.get("sliding_window") is not None:
        window = SlidingWindow(config.positive_int("sliding_window"), (True,) * engine.n_layer)
        engine = replace(engine, sliding_window=window)
    return engine


# The EngineConfig sizes under the config.json keys transformers' Llama-shaped configs use.
HF_SIZES = {
    "n_vocab": "vocab_size", "n_ctx": "max_position_embeddings", "n_embd": "hidden_size", "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads", "n_ff": "intermediate_size",
}


def hf_config(config: HFConfig, **options: Any) -> EngineConfig:
    """The engine's `llama` forward for a config.json of a Llama-shaped family; `options` the
    EngineConfig fields the family sets (qkv_bias, qk_norm, query_scale). RoPE turns the first
    partial_rotary_factor of each head (all of it unless the config says)."""
    if config.get("hidden_act", "silu") != "silu":
        raise GptgenError(f"{config.path}: hidden_act {config.get('hidden_act')!r} is not supported (silu)")
    scaling = config.get("rope_parameters") or config.get("rope_scaling")
    partial = (scaling if isinstance(scaling, dict) else {}).get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
        raise GptgenError(f"{config.path}: partial_rotary_factor must be in (0, 1], not {partial!r}")
    sizes = config.sizes(HF_SIZES)
    head_dim = config.positive_int("head_dim", sizes["n_embd"] // sizes["n_head"])
    return EngineConfig(
        arch="llama",
        **sizes,
        n_kv_head=config.positive_int("num_key_value_heads", sizes["n_head"]),
        head_dim=head_dim,
        norm_eps=config.positive_float("rms_norm_eps", 1e-6),
        rope=hf_rope(config, scaling, config.get("rope_theta", 10000.0), int(head_dim * partial)),
        **options,
    )


def hf_rope(config: HFConfig, scaling: object, default_base: object, dims: int) -> RopeConfig:
    """RoPE from a config.json's scaling settings (transformers 5's rope_parameters or an
    earlier rope_scaling: a dict or None), its base from them or else `default_base`.
    Hugging Face checkpoints keep Q and K rows as trained: rotate_half pairs."""
    scaling = scaling or {}
    if not isinstance(scaling, dict):
        raise GptgenError(f"{config.path}: rope_scaling must be an object, not {scaling!r}")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    base = scaling.get("rope_theta", default_base)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise GptgenError(f"{config.path}: rope_theta must be a positive number, not {base!r}")
    rope = RopeConfig(base=float(base), dims=dims, pairing="halves")
    try:
        if rope_type == "default":
            return rope
        if rope_type == "linear":
            return replace(rope, freq_scale=1.0 / float(scaling["factor"]))
        if rope_type == "llama3":
            return replace(rope, factors=llama3_factors(scaling, float(base), dims))
        if rope_type in ("longrope", "su"):
            return _longrope(config, scaling, rope)
        if rope_type == "yarn":
            # transformers uses mscale and mscale_all_dim only when both are set.
            mscale, mscale_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
            attention = scaling.get("attention_factor")
            return yarn_rope(
                replace(rope, freq_scale=1.0 / float(scaling["factor"])),
                original_context=int(scaling.get("original_max_position_embeddings") or config.positive_int("max_position_embeddings")),
                beta_fast=float(scaling.get("beta_fast") or 32.0),
                beta_slow=float(scaling.get("beta_slow") or 1.0),
                mscale=float(mscale) if mscale and mscale_all else 1.0,
                mscale_all_dim=float(mscale_all) if mscale and mscale_all else 0.0,
                attention=None if attention is None else float(attention),
                truncate=bool(scaling.get("truncate", True)),
            )
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise GptgenError(f"{config.path}: rope_scaling {scaling!r} is not valid ({type(e).__name__}: {e})") from None
    raise GptgenError(f"{config.path}: RoPE scaling {rope_type!r} is not supported (linear, llama3, yarn, longrope)")


def _longrope(config: HFConfig, scaling: dict, rope: RopeConfig) -> RopeConfig:
    """Phi-3's LongRoPE as transformers computes it: the long factors beyond the original
    context (gptgen's sessions span the model's context, so: when max_position_embeddings
    exceeds it), else the short ones; cos and sin times the attention factor,
    sqrt(1 + ln(factor) / ln(original)) unless the config gives one."""
    original = int(scaling.get("original_max_position_embeddings") or config.positive_int("original_max_position_embeddings"))
    factor = config.positive_int("max_position_embeddings") / original
    factors = scaling["long_factor"] if factor > 1 else scaling["short_factor"]
    if len(factors) != rope.dims // 2:
        raise GptgenError(f"{config.path}: {len(factors)} LongRoPE factors for {rope.dims} rotated dimensions (want {rope.dims // 2})")
    attention = scaling.get("attention_factor")
    if attention is None:
        attention = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
    return replace(rope, factors=tuple(float(np.float32(f)) for f in factors), attn_factor=float(attention))


# Llama 3's pre-tokenizer regex (llama.cpp's LLAMA_VOCAB_PRE_TYPE_LLAMA3).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _llama3():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _smollm():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )


# Hugging Face's Llama modules, which the models built like it share (Qwen's Q/K norms too).
HF_NAMES = HFTensorNames(
    globals={"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"},
    block_prefix=r"model\.layers\.(\d+)\.",
    blocks={
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    },
    # A cached buffer, recomputed by the engine.
    ignored=r".*rotary_emb\.inv_freq",
)


FAMILY = Family(
    name="llama", gguf_arch="llama", hf_model_types=("llama", "mistral"), gguf_config=_gguf_config, hf_config=_hf_config,
    hf_names=HF_NAMES,
    pre_tokenizers={
        "smollm": PreTokenizer(_smollm),
        "llama-bpe": PreTokenizer(_llama3, ignore_merges=True),
        "llama3": PreTokenizer(_llama3, ignore_merges=True),
    },
)
