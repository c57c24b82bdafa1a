"""What a loader produces and the engine consumes: architecture, sizes, and weight views
named the GGUF way (`token_embd.weight`, `blk.0.attn_qkv.weight`, ...)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import GptgenError
from ..options import SamplingParams
from .config import EngineConfig

_LAYOUTS = ("out_in", "in_out")


class StorageType(NamedTuple):
    """A storage type the engine reads: `block_elems` elements take `block_bytes` bytes
    (plain floats are blocks of one), read in place at a multiple of `alignment`."""

    name: str
    block_elems: int
    block_bytes: int
    alignment: int


@functools.cache
def storage_types() -> dict[str, StorageType]:
    """The engine's storage types by name ("f32", "q4_k", ...; ggml's name is the upper case),
    read from the engine's one table (rust/tensor.rs) on first use."""
    from .. import _native

    return {row[0]: StorageType(*row) for row in _native.storage_types()}


def storage_bytes(dtype: str, shape: tuple[int, ...] | list[int]) -> int:
    """Bytes a tensor of `shape` (outermost first) takes stored as `dtype`. Python ints, so
    absurd shapes give absurd sizes (caught by comparing with the file), never an overflow."""
    count = 1
    for d in shape:
        count *= d
    stored = storage_types().get(dtype)
    if stored is None:
        raise GptgenError(f"tensor type {dtype!r} is not supported")
    if stored.block_elems > 1 and (not shape or shape[-1] % stored.block_elems):
        raise GptgenError(f"rows of {shape[-1] if shape else 0} are not whole {dtype} blocks")
    return count // stored.block_elems * stored.block_bytes


@dataclass(frozen=True)
class TensorView:
    """A weight as raw bytes: `data` is a read-only, contiguous uint8 view of the file.

    `shape` is as stored, outermost first. `layout` says how a 2-D weight of logical shape
    [n_out, n_in] is stored: "out_in" ([n_out, n_in], nn.Linear and GGUF) or "in_out"
    ([n_in, n_out], the Conv1D of Hugging Face GPT-2).
    """

    data: np.ndarray
    dtype: str
    shape: tuple[int, ...]
    layout: str = "out_in"

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def check(self, name: str) -> None:
        """Everything the engine assumes of the buffer, checked here so that a loader's
        mistake is a clear error rather than the engine's refusal (or worse)."""
        data = self.data
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
            raise GptgenError(f"tensor {name}: data must be a 1-D uint8 array")
        if not data.flags.c_contiguous:
            raise GptgenError(f"tensor {name}: data is not contiguous")
        stored = storage_types().get(self.dtype)
        if stored is not None and data.ctypes.data % stored.alignment:
            raise GptgenError(f"tensor {name}: data is not aligned to {stored.alignment} bytes")
        if self.layout not in _LAYOUTS:
            raise GptgenError(f"tensor {name}: layout {self.layout!r} is not one of {_LAYOUTS}")
        if not self.shape or any(not isinstance(d, int) or d <= 0 for d in self.shape):
            raise GptgenError(f"tensor {name}: shape {self.shape} is not valid")
        try:
            expected = storage_bytes(self.dtype, self.shape)
        except GptgenError as e:
            raise GptgenError(f"tensor {name}: {e}") from None
        if data.nbytes != expected:
            raise GptgenError(f"tensor {name}: holds {data.nbytes} bytes, its shape and type need {expected}")

    def to_numpy(self) -> np.ndarray:
        """The values as float32 (a copy), for tests and tools; the engine never needs this."""
        if self.dtype == "f32":
            values = self.data.view(np.float32)
        elif self.dtype == "f16":
            values = self.data.view(np.float16).astype(np.float32)
        elif self.dtype == "bf16":
            values = (self.data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise GptgenError(f"cannot convert tensor type {self.dtype} to float32")
        return values.reshape(self.shape)


@dataclass
class ModelSpec:
    """A model ready to hand to the engine."""

    # The model family (gptgen.families), e.g. "llama".
    arch: str
    config: EngineConfig
    tensors: dict[str, TensorView]
    path: Path
    format: str
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None
    # What `generate` does when the user sets no sampling option.
    sampling_defaults: SamplingParams = field(default_factory=SamplingParams)  # only what the files set; None: unset
    # Jinja chat template from the model files, if any.
    chat_template: str | None = None

    @property
    def n_ctx(self) -> int:
        return self.config.n_ctx

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors.values())

    def dtype_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.dtype] = counts.get(t.dtype, 0) + 1
        return counts

    def engine_tensors(self) -> dict[str, tuple[np.ndarray, str, list[int], str]]:
        """The tensors in the form `gptgen._native.Engine` takes, each checked first."""
        for name, t in self.tensors.items():
            t.check(name)
        return {name: (t.data, t.dtype, list(t.shape), t.layout) for name, t in self.tensors.items()}
