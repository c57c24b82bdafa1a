"""The engine's configuration: what a family's loader derives from a model file and
`gptgen._native.Engine` reads, field by field (rust/py.rs), into the engine's `Config`. This
class is its one description; the engine checks the values again (rust/model/mod.rs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embeddings: pair i of a head's first `dims` dimensions turns by
    freq_scale * pos * base^(-2i/dims) / factors[i]. `pairing`: "adjacent" (elements 2i, 2i+1: GGUF `llama` weights,
    whose Q/K rows the converter permuted) or "halves" (i, i + dims/2: rotate_half, NeoX)."""

    base: float
    dims: int
    pairing: str
    # Every angle times this: linear RoPE scaling's 1 / factor.
    freq_scale: float = 1.0
    # [dims / 2] divisors of each pair's angle: Llama 3's `llama3` scaling (GGUF's
    # `rope_freqs.weight`); None without.
    factors: tuple[float, ...] | None = None
    # YaRN, as ggml computes it: pair i's angle blends freq_scale * theta (interpolated) and
    # theta (extrapolated) by ext_factor * ramp(i), the ramp falling from 1 to 0 over the pairs
    # corr_dims[0]..corr_dims[1]; cos and sin are then scaled by attn_factor * (1 + 0.1 *
    # ln(1 / freq_scale)). ext_factor 0: no YaRN (and no scaling of cos and sin).
    ext_factor: float = 0.0
    corr_dims: tuple[float, float] = (0.0, 0.0)
    attn_factor: float = 1.0


@dataclass(frozen=True)
class SlidingWindow:
    """Layers that attend only to the last `length` positions (their own and length - 1
    before): `layers[i]` says whether layer i does; `rope` is their own RoPE where it differs
    from the model's (Gemma 3's local base)."""

    length: int
    layers: tuple[bool, ...]
    rope: RopeConfig | None = None


@dataclass(frozen=True)
class EngineConfig:
    # The engine's forward pass (rust/model/): "gpt2", "llama" or "gemma3". Several families
    # can share one forward, each setting the options below.
    arch: str
    n_vocab: int
    # Longest sequence the model was trained for.
    n_ctx: int
    n_embd: int
    n_layer: int
    n_head: int
    n_kv_head: int
    n_ff: int
    head_dim: int
    norm_eps: float
    # Element type of the KV cache: "f16" (llama.cpp's, for GGUF files) or "f32".
    kv_cache: str = "f32"
    # None: learned position embeddings (GPT-2).
    rope: RopeConfig | None = None
    # Biases on the Q, K and V projections (blk.N.attn_{q,k,v}.bias).
    qkv_bias: bool = False
    # RMSNorm of each query and key head before RoPE (blk.N.attn_{q,k}_norm.weight, [head_dim]).
    qk_norm: bool = False
    sliding_window: SlidingWindow | None = None
    # Queries times this after RoPE, the scores then unscaled (Gemma's query_pre_attn_scalar^-1/2);
    # None: scores times 1/sqrt(head_dim).
    query_scale: float | None = None
    # GELU as llama.cpp's CPU backend computes it (a table over f16 inputs), for GGUF files;
    # else in float32, as transformers does.
    gelu_lookup: bool = False
    # Added to every RMSNorm weight at load (Gemma's checkpoints store w - 1; GGUF files w).
    norm_weight_offset: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EngineConfig":
        window = values.get("sliding_window")
        if window is not None:
            window = SlidingWindow(window["length"], tuple(window["layers"]), _rope_from_dict(window.get("rope")))
        return cls(**{**values, "rope": _rope_from_dict(values.get("rope")), "sliding_window": window})


def _rope_from_dict(rope: dict[str, Any] | None) -> RopeConfig | None:
    if rope is None:
        return None
    # JSON gives lists; the config's sequences are tuples.
    factors = rope.get("factors")
    return RopeConfig(**{**rope, "factors": None if factors is None else tuple(factors), "corr_dims": tuple(rope.get("corr_dims", (0.0, 0.0)))})
