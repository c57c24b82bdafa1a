"""GPT-2 (transformers models/gpt2): learned position embeddings, pre-LayerNorm blocks, fused
QKV attention with biases, a GELU (tanh) MLP; the engine's `gpt2` forward (rust/model/gpt2.rs)."""

from __future__ import annotations

from typing import Any

from ..errors import GptgenError
from ..loading.config import EngineConfig
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig
from .base import Family, HFTensorNames, PreTokenizer


def _gguf_config(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    return EngineConfig(arch="gpt2", **common, norm_eps=meta.positive_float("gpt2.attention.layer_norm_epsilon", 1e-5))


def _hf_config(config: HFConfig) -> EngineConfig:
    activation = config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise GptgenError(f"{config.path}: activation_function {activation!r} is not supported (gelu_new)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(flag):
            raise GptgenError(f"{config.path}: {flag} = true is not supported")
    sizes = config.sizes({"n_vocab": "vocab_size", "n_ctx": "n_positions", "n_embd": "n_embd", "n_layer": "n_layer", "n_head": "n_head"})
    n_embd, n_head = sizes["n_embd"], sizes["n_head"]
    if n_embd % n_head:
        raise GptgenError(f"{config.path}: n_embd {n_embd} is not divisible by n_head {n_head}")
    n_inner = config.get("n_inner")
    n_ff = 4 * n_embd if n_inner is None else config.positive_int("n_inner")
    eps = config.positive_float("layer_norm_epsilon", 1e-5)
    return EngineConfig(arch="gpt2", **sizes, n_kv_head=n_head, n_ff=n_ff, head_dim=n_embd // n_head, norm_eps=eps)


def _byte_level():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


FAMILY = Family(
    name="gpt2", gguf_arch="gpt2", hf_model_types=("gpt2",), gguf_config=_gguf_config, hf_config=_hf_config,
    hf_names=HFTensorNames(
        globals={"wte": "token_embd", "wpe": "position_embd", "ln_f": "output_norm", "lm_head": "output"},
        block_prefix=r"h\.(\d+)\.",
        blocks={"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"},
        # Conv1D weights are stored [in, out].
        in_out=frozenset({"attn_qkv", "attn_output", "ffn_up", "ffn_down"}),
        strip_prefix="transformer.",
        # Causal-mask buffers saved by old transformers versions.
        ignored=r"h\.\d+\.attn\.(masked_)?bias",
    ),
    hf_tied_default=True,
    pre_tokenizers={"gpt-2": PreTokenizer(_byte_level), "default": PreTokenizer(_byte_level)},
)
