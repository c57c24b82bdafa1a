"""Qwen2 / Qwen2.5 (and Qwen2.5-Coder, DeepSeek-R1-Distill-Qwen) and Qwen3 (llama.cpp
src/models/qwen2.cpp and qwen3.cpp, transformers models/qwen2 and qwen3): Llama's shape with
NeoX RoPE pairs (llama.cpp's converter does not permute Qwen's Q/K rows), Q/K/V biases
(Qwen2) or per-head Q/K RMSNorms before RoPE (Qwen3); the engine's `llama` forward."""

from __future__ import annotations

from typing import Any

from ..errors import GptgenError
from ..loading.config import EngineConfig
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig
from . import llama
from .base import Family, PreTokenizer

# llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 (Qwen2's tokenizer.json): single digits.
_QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _qwen2_pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


def _qwen2_gguf(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    return llama.gguf_config(meta, common, pairing="halves", qkv_bias=True)


def _qwen3_gguf(meta: GGUFMetadata, common: dict[str, Any]) -> EngineConfig:
    return llama.gguf_config(meta, common, pairing="halves", qk_norm=True)


def _checked(config: HFConfig) -> HFConfig:
    if config.get("use_sliding_window"):
        raise GptgenError(f"{config.path}: use_sliding_window = true is not supported")
    return config


def _qwen2_hf(config: HFConfig) -> EngineConfig:
    return llama.hf_config(_checked(config), qkv_bias=True)


def _qwen3_hf(config: HFConfig) -> EngineConfig:
    if config.get("attention_bias"):
        raise GptgenError(f"{config.path}: attention_bias = true is not supported")
    return llama.hf_config(_checked(config), qk_norm=True)


_PRE_TOKENIZERS = {"qwen2": PreTokenizer(_qwen2_pre_tokenizer)}

def _family(name: str, gguf_config, hf_config) -> Family:
    """A Qwen generation: GGUF architecture and model_type `name`, Llama's Hugging Face tensor
    names (with Qwen3's Q/K norms), the qwen2 pre-tokenizer, its own configuration readers."""
    return Family(name, name, (name,), gguf_config, hf_config, hf_names=llama.HF_NAMES, pre_tokenizers=_PRE_TOKENIZERS)


QWEN2 = _family("qwen2", _qwen2_gguf, _qwen2_hf)
QWEN3 = _family("qwen3", _qwen3_gguf, _qwen3_hf)
