"""Phi-3 / Phi-3.5 / Phi-4-mini (llama.cpp src/models/phi3.cpp, transformers models/phi3):
Llama's block with the Q/K/V projections fused into one matrix and the gate and up projections
into another, NeoX RoPE (over part of each head where partial_rotary_factor says) with LongRoPE
factors where the model has them, queries scaled by head_dim^-1/2 before attention; the
engine's `llama` forward. llama.cpp ignores Phi-3's sliding window, and so does gptgen."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import GptgenError
from ..loading.config import EngineConfig
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig
from . import llama
from .base import Family, HFTensorNames


def _query_scale(head_dim: int) -> float:
    # llama.cpp scales the queries (before they are rounded to the cache's f16) by 1/sqrtf(head_dim).
    return float(np.float32(1.0) / np.sqrt(np.float32(head_dim)))


def _gguf_config(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    config = llama.gguf_config(meta, common, pairing="halves")
    return replace(config, query_scale=_query_scale(config.head_dim))


def _hf_config(config: HFConfig) -> EngineConfig:
    if config.get("hidden_act", "silu") != "silu":
        raise GptgenError(f"{config.path}: hidden_act {config.get('hidden_act')!r} is not supported (silu)")
    sizes = config.sizes(
        {"n_vocab": "vocab_size", "n_ctx": "max_position_embeddings", "n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_ff": "intermediate_size"}
    )
    head_dim = config.positive_int("head_dim", sizes["n_embd"] // sizes["n_head"])
    parameters = config.get("rope_parameters") or config.get("rope_scaling") or {}
    partial = (parameters if isinstance(parameters, dict) else {}).get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
        raise GptgenError(f"{config.path}: partial_rotary_factor must be in (0, 1], not {partial!r}")
    return EngineConfig(
        arch="llama",
        **sizes,
        n_kv_head=config.positive_int("num_key_value_heads", sizes["n_head"]),
        head_dim=head_dim,
        norm_eps=config.positive_float("rms_norm_eps", 1e-5),
        rope=llama.hf_rope(config, parameters, config.get("rope_theta", 10000.0), int(head_dim * partial)),
        query_scale=_query_scale(head_dim),
    )


HF_NAMES = HFTensorNames(
    globals={"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"},
    block_prefix=r"model\.layers\.(\d+)\.",
    blocks={
        "input_layernorm": "attn_norm", "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    },
    ignored=r".*rotary_emb\.inv_freq",
)

PHI3 = Family(name="phi3", gguf_arch="phi3", hf_model_types=("phi3",), gguf_config=_gguf_config, hf_config=_hf_config, hf_names=HF_NAMES)
