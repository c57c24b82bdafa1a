"""Phi-3 / Phi-3.5 / Phi-4-mini (llama.cpp src/models/phi3.cpp, transformers models/phi3):
Llama's block with the Q/K/V projections fused into one matrix and the gate and up projections
into another, NeoX RoPE (over part of each head where partial_rotary_factor says) with LongRoPE
factors where the model has them, queries scaled by head_dim^-1/2 before attention; the
engine's `llama` forward. llama.cpp ignores Phi-3's sliding window, and so does gptgen."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..loading.config import EngineConfig
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig
from . import llama
from .base import Family


def _query_scale(head_dim: int) -> float:
    # llama.cpp scales the queries (before they are rounded to the cache's f16) by 1/sqrtf(head_dim).
    return float(np.float32(1.0) / np.sqrt(np.float32(head_dim)))


def _gguf_config(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    config = llama.gguf_config(meta, common, pairing="halves")
    return replace(config, query_scale=_query_scale(config.head_dim))


def _hf_config(config: HFConfig) -> EngineConfig:
    engine = llama.hf_config(config)
    return replace(engine, query_scale=_query_scale(engine.head_dim))


# Llama's module names, with the fused projections in place of the separate ones.
HF_NAMES = replace(
    llama.HF_NAMES,
    blocks={
        "input_layernorm": "attn_norm", "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    },
)

PHI3 = Family(name="phi3", gguf_arch="phi3", hf_model_types=("phi3",), gguf_config=_gguf_config, hf_config=_hf_config, hf_names=HF_NAMES)
