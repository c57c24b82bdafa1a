"""Memory-mapped safetensors reading.

The format is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}}, then the data. We read the header ourselves and return
views into one memory map of the file (`mapping.map_file`): the `safetensors` package's NumPy
API copies every tensor into memory and cannot represent bfloat16, and both would defeat
zero-copy loading.
Every field is validated against the file size before a view is made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import GptgenError
from .mapping import map_file
from .spec import TensorView, storage_bytes, storage_types

_DTYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
# A header larger than this is not a model header (the format's own reference caps it too).
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors(path: Path) -> dict[str, TensorView]:
    """All tensors of one .safetensors file as read-only views of a memory map."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise GptgenError(f"{path}: not a safetensors file (too short)")
            header_len = int.from_bytes(prefix, "little")
            if header_len > min(size - 8, _MAX_HEADER_BYTES):
                raise GptgenError(f"{path}: safetensors header length {header_len} is past the end of the file")
            header_bytes = f.read(header_len)
    except OSError as e:
        raise GptgenError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(header_bytes, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GptgenError(f"{path}: safetensors header is not valid JSON") from None
    except _DuplicateKey as e:
        raise GptgenError(f"{path}: safetensors header names {e.args[0]!r} twice") from None
    if not isinstance(header, dict):
        raise GptgenError(f"{path}: safetensors header is not a JSON object")

    data_start = 8 + header_len
    data_len = size - data_start
    try:
        mapped = map_file(path)
    except OSError as e:
        raise GptgenError(f"cannot map {path}: {e.strerror or e}") from None
    views: dict[str, TensorView] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        views[name] = _tensor_view(path, name, info, mapped, data_start, data_len)
    return views


def _tensor_view(path: Path, name: str, info: object, mapped: np.ndarray, data_start: int, data_len: int) -> TensorView:
    where = f"{path}: tensor {name}"
    if not isinstance(info, dict):
        raise GptgenError(f"{where}: entry is not an object")
    dtype = _DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise GptgenError(f"{where}: unsupported dtype {info.get('dtype')!r} (supported: F32, F16, BF16)")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
        raise GptgenError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise GptgenError(f"{where}: data_offsets {offsets!r} are not two non-negative integers")
    begin, end = offsets
    n_bytes = storage_bytes(dtype, shape)
    if not begin <= end <= data_len:
        raise GptgenError(f"{where}: data offsets {offsets} lie outside the file")
    if end - begin != n_bytes:
        raise GptgenError(f"{where}: shape {shape} needs {n_bytes} bytes, offsets give {end - begin}")
    data = mapped[data_start + begin : data_start + end]
    if data.ctypes.data % storage_types()[dtype].alignment:
        # The engine reads elements in place and needs them aligned; this copy is rare.
        data = data.copy()
        data.flags.writeable = False
    return TensorView(data=data, dtype=dtype, shape=tuple(shape))


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json keeps the last of repeated keys silently; two tensors under one name is ambiguous.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
