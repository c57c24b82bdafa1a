"""What a model family tells the generic loaders (loading/gguf.py, loading/checkpoint.py):
how to read its configuration from GGUF metadata and from a Hugging Face config.json, how its
Hugging Face tensor names map onto the engine's (GGUF-style) names, and the tokenizer
pre-types and chat format it brings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..loading.config import EngineConfig
from ..loading.gguf_metadata import GGUFMetadata
from ..loading.hf_config import HFConfig


@dataclass(frozen=True)
class PreTokenizer:
    """How a GGUF `tokenizer.ggml.pre` splits text before byte-level BPE: `build()` returns a
    `tokenizers` pre-tokenizer; `ignore_merges` takes whole-word vocabulary hits before any
    merge (Llama 3's tokenizer)."""

    build: Callable[[], Any]
    ignore_merges: bool = False


@dataclass(frozen=True)
class HFTensorNames:
    """A family's Hugging Face tensor names -> engine names and layouts, module by module: the
    HF tensor `{module}.weight` (or `.bias`) becomes the engine's `{engine module}.weight`."""

    # whole-model modules: HF module -> engine module
    globals: dict[str, str]
    # per-block modules: the HF module after the block prefix -> engine module after "blk.N."
    blocks: dict[str, str]
    # the block prefix, with the layer number as its one group
    block_prefix: str
    # engine modules stored [in, out] (GPT-2's Conv1D); every other matrix is [out, in]
    in_out: frozenset[str] = frozenset()
    # stripped from every HF name first ("transformer." in GPT-2 checkpoints)
    strip_prefix: str = ""
    # HF names that are buffers, not weights (causal masks, cached RoPE frequencies)
    ignored: str = r"(?!)"

    def target(self, hf_name: str) -> tuple[str, str, int | None] | None:
        """(engine name, layout, layer or None) for a tensor; None if the family has no such
        tensor, ("", "", None) if it is a buffer to skip."""
        name = hf_name.removeprefix(self.strip_prefix)
        if re.fullmatch(self.ignored, name):
            return ("", "", None)
        module, _, kind = name.rpartition(".")
        engine_module, layer = self.globals.get(module), None
        match = re.fullmatch(self.block_prefix + r"(.+)", module)
        if match and match.group(2) in self.blocks:
            layer = int(match.group(1))
            engine_module = f"blk.{layer}.{self.blocks[match.group(2)]}"
        if engine_module is None:
            return None
        layout = "in_out" if engine_module.rpartition(".")[2] in self.in_out else "out_in"
        return f"{engine_module}.{kind}", layout, layer


@dataclass(frozen=True)
class Family:
    # The name `gptgen info` shows.
    name: str
    # `general.architecture` of its GGUF files (None: no GGUF support).
    gguf_arch: str | None
    # config.json `model_type` values of its checkpoints.
    hf_model_types: tuple[str, ...]
    # EngineConfig from GGUF metadata; `common` holds the fields every GGUF file gives the same
    # way (n_vocab, n_ctx, n_embd, n_layer, n_head, n_kv_head, n_ff, head_dim, kv_cache).
    gguf_config: Callable[[GGUFMetadata, dict[str, Any]], EngineConfig] | None = None
    # EngineConfig from config.json.
    hf_config: Callable[[HFConfig], EngineConfig] | None = None
    hf_names: HFTensorNames | None = None
    # Whether a checkpoint ties its LM head to the embedding when config.json does not say.
    hf_tied_default: bool = False
    # `tokenizer.ggml.pre` values this family's GGUF files use.
    pre_tokenizers: dict[str, PreTokenizer] = field(default_factory=dict)
    # The chat template used when the model file carries none (None: chat needs the file's).
    chat_template: str | None = None
