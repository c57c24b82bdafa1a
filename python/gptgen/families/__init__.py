"""Model families: one module each (gpt2.py, llama.py, qwen.py, gemma.py, phi3.py), holding everything gptgen knows about
the family on the Python side; the loaders find a file's family here. A new family is a new
module with a `FAMILY` (families/base.py), listed in _BUILTIN, plus its forward pass in
rust/model/ unless an existing one serves (see README, "Layout")."""

from __future__ import annotations

from .base import Family, HFTensorNames, PreTokenizer
from .gemma import GEMMA3
from .gpt2 import FAMILY as GPT2
from .llama import FAMILY as LLAMA
from .phi3 import PHI3
from .qwen import QWEN2, QWEN3

_BUILTIN = (GPT2, LLAMA, QWEN2, QWEN3, GEMMA3, PHI3)
_FAMILIES: list[Family] = list(_BUILTIN)


def register(family: Family) -> None:
    """Adds a family (tests, plugins); a family of the same name is replaced."""
    _FAMILIES[:] = [f for f in _FAMILIES if f.name != family.name] + [family]


def by_gguf_arch(arch: object) -> Family | None:
    return next((f for f in _FAMILIES if f.gguf_arch is not None and f.gguf_arch == arch), None)


def by_model_type(model_type: object) -> Family | None:
    return next((f for f in _FAMILIES if model_type in f.hf_model_types), None)


def pre_tokenizer(name: object) -> PreTokenizer | None:
    return next((f.pre_tokenizers[name] for f in _FAMILIES if name in f.pre_tokenizers), None)


def gguf_archs() -> list[str]:
    return [f.gguf_arch for f in _FAMILIES if f.gguf_arch is not None]


def model_types() -> list[str]:
    return [t for f in _FAMILIES for t in f.hf_model_types]


def pre_tokenizer_names() -> list[str]:
    return [name for f in _FAMILIES for name in f.pre_tokenizers]


__all__ = ["Family", "HFTensorNames", "PreTokenizer", "register", "by_gguf_arch", "by_model_type", "pre_tokenizer"]
