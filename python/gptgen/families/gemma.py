"""Gemma 3 (llama.cpp src/models/gemma3.cpp, transformers models/gemma3, `gemma3_text`
checkpoints): embeddings scaled by sqrt(n_embd), per-head Q/K RMSNorms, NeoX RoPE, queries
scaled by query_pre_attn_scalar^-1/2, post-attention and post-feed-forward norms, a GeGLU
feed-forward, and sliding-window attention on five of every six layers, which have their own
RoPE base; the engine's `gemma3` forward (rust/model/gemma3.rs). Its SentencePiece vocabulary
and, where a file has no chat template, Gemma's turn format."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import GptgenError
from ..loading.config import EngineConfig, RopeConfig, SlidingWindow
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig
from . import llama
from .base import Family

# Layers per global one: llama.cpp's default for gemma3 files, transformers' sliding_window_pattern.
_PATTERN = 6


def _windowed_layers(n_layer: int, pattern: int) -> tuple[bool, ...]:
    """Every `pattern`-th layer global, the others windowed (0: all windowed)."""
    return tuple(pattern == 0 or i % pattern < pattern - 1 for i in range(n_layer))


def _gguf_config(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    if meta.get(meta.key("final_logit_softcapping")):
        raise GptgenError(f"{meta.path}: final logit soft-capping is not supported")
    n_layer, head_dim = common["n_layer"], common["head_dim"]
    rope = llama.gguf_rope(meta, head_dim, "halves")
    window = meta.get(meta.key("attention.sliding_window"))
    sliding = None
    if window:
        pattern = meta.get(meta.key("attention.sliding_window_pattern"), _PATTERN)
        if isinstance(pattern, list):
            if len(pattern) != n_layer:
                raise GptgenError(f"{meta.path}: sliding_window_pattern has {len(pattern)} entries for {n_layer} layers")
            layers = tuple(bool(p) for p in pattern)
        else:
            layers = _windowed_layers(n_layer, int(pattern))
        # The local layers' RoPE: their own base (llama.cpp's default 10,000), no scaling.
        local = RopeConfig(base=meta.positive_float(meta.key("rope.freq_base_swa"), 10000.0), dims=rope.dims, pairing="halves")
        sliding = SlidingWindow(meta.positive_int(meta.key("attention.sliding_window")), layers, local)
    # As llama.cpp: the 27B model (62 layers) scales queries by (n_embd / n_head)^-1/2, the
    # others by head_dim^-1/2 (their query_pre_attn_scalar), in float32.
    scalar = common["n_embd"] // common["n_head"] if n_layer == 62 else head_dim
    return EngineConfig(
        arch="gemma3",
        **common,
        norm_eps=meta.positive_float(meta.key("attention.layer_norm_rms_epsilon")),
        rope=rope,
        qk_norm=True,
        sliding_window=sliding,
        query_scale=float(np.float32(1.0) / np.sqrt(np.float32(scalar))),
        gelu_lookup=True,
    )


def _hf_config(config: HFConfig) -> EngineConfig:
    activation = config.get("hidden_activation", config.get("hidden_act", "gelu_pytorch_tanh"))
    if activation != "gelu_pytorch_tanh":
        raise GptgenError(f"{config.path}: hidden_activation {activation!r} is not supported (gelu_pytorch_tanh)")
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if config.get(key):
            raise GptgenError(f"{config.path}: {key} is not supported")
    if config.get("use_bidirectional_attention"):
        raise GptgenError(f"{config.path}: use_bidirectional_attention = true is not supported")
    sizes = config.sizes(llama.HF_SIZES)
    head_dim = config.positive_int("head_dim", 256)
    # transformers 5 keeps each layer type's RoPE in rope_parameters; earlier versions a global
    # rope_theta and rope_scaling, and the local layers' base as rope_local_base_freq.
    parameters = config.get("rope_parameters") or {}
    if not isinstance(parameters, dict):
        raise GptgenError(f"{config.path}: rope_parameters must be an object, not {parameters!r}")
    if "full_attention" in parameters or "sliding_attention" in parameters:
        rope = llama.hf_rope(config, parameters.get("full_attention"), 1000000.0, head_dim)
        local = llama.hf_rope(config, parameters.get("sliding_attention"), 10000.0, head_dim)
    else:
        rope = llama.hf_rope(config, parameters or config.get("rope_scaling"), config.get("rope_theta", 1000000.0), head_dim)
        local = RopeConfig(base=config.positive_float("rope_local_base_freq", 10000.0), dims=head_dim, pairing="halves")
    layer_types = config.get("layer_types")
    if layer_types is None:
        layers = _windowed_layers(sizes["n_layer"], config.positive_int("sliding_window_pattern", _PATTERN))
    elif isinstance(layer_types, list) and len(layer_types) == sizes["n_layer"] and set(layer_types) <= {"sliding_attention", "full_attention"}:
        layers = tuple(t == "sliding_attention" for t in layer_types)
    else:
        raise GptgenError(f"{config.path}: layer_types must list sliding_attention or full_attention for each of {sizes['n_layer']} layers")
    window = config.get("sliding_window")
    sliding = SlidingWindow(config.positive_int("sliding_window"), layers, local) if window is not None and any(layers) else None
    scalar = config.positive_float("query_pre_attn_scalar", head_dim)
    return EngineConfig(
        arch="gemma3",
        **sizes,
        n_kv_head=config.positive_int("num_key_value_heads", sizes["n_head"]),
        head_dim=head_dim,
        norm_eps=config.positive_float("rms_norm_eps", 1e-6),
        rope=rope,
        qk_norm=True,
        sliding_window=sliding,
        query_scale=float(np.float32(scalar) ** np.float32(-0.5)),
        # Gemma's RMSNorm scales by 1 + w.
        norm_weight_offset=1.0,
    )


# Llama's module names, but for the norms: Gemma's post_attention_layernorm follows the
# attention (Llama's precedes the feed-forward), and two more norms; a second RoPE buffer.
HF_NAMES = replace(
    llama.HF_NAMES,
    blocks={
        **{k: v for k, v in llama.HF_NAMES.blocks.items() if k != "post_attention_layernorm"},
        "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    },
    ignored=r".*rotary_emb(_local)?\.inv_freq",
)

# Gemma's turn format, as llama.cpp renders it for a Gemma file without a template: contents
# trimmed, assistant turns as `model`, a system message joined to the first user turn.
CHAT_TEMPLATE = (
    '{%- set ns = namespace(system="") -%}'
    "{%- for message in messages -%}"
    '{%- if message["role"] == "system" -%}'
    '{%- set ns.system = ns.system ~ (message["content"] | trim) -%}'
    "{%- else -%}"
    '{%- set role = "model" if message["role"] == "assistant" else message["role"] -%}'
    '{{- "<start_of_turn>" ~ role ~ "\\n" -}}'
    '{%- if ns.system and role != "model" -%}{{- ns.system ~ "\\n\\n" -}}{%- set ns.system = "" -%}{%- endif -%}'
    '{{- (message["content"] | trim) ~ "<end_of_turn>\\n" -}}'
    "{%- endif -%}"
    "{%- endfor -%}"
    '{%- if add_generation_prompt -%}{{- "<start_of_turn>model\\n" -}}{%- endif -%}'
)

GEMMA3 = Family(
    name="gemma3", gguf_arch="gemma3", hf_model_types=("gemma3_text",), gguf_config=_gguf_config, hf_config=_hf_config,
    hf_names=HF_NAMES, hf_tied_default=True, chat_template=CHAT_TEMPLATE,
)
