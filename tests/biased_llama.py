"""A model family that exists only for the tests: a Llama with Q/K/V biases and per-head Q/K
RMSNorms before NeoX-style RoPE (the pieces Qwen2 and Qwen3 use), as GGUF architecture
`biased-llama`. It shows what adding a family takes: this one module, registered with
`gptgen.families.register`; the engine's `llama` forward already has every piece."""

from __future__ import annotations

from gptgen.families import Family
from gptgen.families.llama import FAMILY as LLAMA
from gptgen.families.llama import gguf_rope
from gptgen.loading.config import EngineConfig


def _gguf_config(meta, common) -> EngineConfig:
    return EngineConfig(
        arch="llama",
        **common,
        norm_eps=meta.positive_float(meta.key("attention.layer_norm_rms_epsilon")),
        rope=gguf_rope(meta, common["head_dim"], "halves"),
        qkv_bias=True,
        qk_norm=True,
    )


FAMILY = Family(name="biased-llama", gguf_arch="biased-llama", hf_model_types=(), gguf_config=_gguf_config, pre_tokenizers=LLAMA.pre_tokenizers)
