"""Generators of malformed model files: each function writes one broken file (or directory)
into a folder and returns its path. Built from a small valid file where that is the point."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

from checkpoints import random_llama_weights, write_llama_gguf

GGUF_MAGIC = b"GGUF"


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return random_llama_weights(rng, n_vocab=257, n_embd=32, n_layer=1, n_head=2, n_kv_head=1, n_ff=64)


def valid_gguf(directory: Path, name: str = "valid.gguf", edit=None, types=None) -> Path:
    weights = _weights()
    if edit is not None:
        edit(weights)
    path = directory / name
    write_llama_gguf(path, weights, n_head=2, n_kv_head=1, rope_base=10000.0, n_ctx=32, types=types or {})
    return path


def _derived(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def _tensor_info_at(data: bytes, name: str) -> tuple[int, int]:
    """(position of the n_dims field, n_dims) of a tensor's info record in a GGUF file."""
    key = name.encode()
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    return at, struct.unpack_from("<I", data, at)[0]


def _patched(data: bytes, at: int, fmt: str, *values) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, at, *values)
    return bytes(patched)


def gguf_cases(directory: Path) -> dict[str, Path]:
    """name -> a broken GGUF file."""
    good = valid_gguf(directory).read_bytes()
    header = struct.calcsize("<4sIQQ")
    cases = {
        "bad magic": _derived(directory, "magic.gguf", b"GGUX" + good[4:]),
        "wrong version": _derived(directory, "version.gguf", good[:4] + struct.pack("<I", 99) + good[8:]),
        "truncated header": _derived(directory, "header.gguf", good[:12]),
        "truncated metadata": _derived(directory, "metadata.gguf", good[: header + 40]),
        "truncated tensor data": _derived(directory, "data.gguf", good[: len(good) - 1000]),
        "huge tensor count": _derived(directory, "tensors.gguf", good[:8] + struct.pack("<Q", 2**60) + good[16:]),
        "huge kv count": _derived(directory, "kvs.gguf", good[:16] + struct.pack("<Q", 2**60) + good[24:]),
        "empty file": _derived(directory, "empty.gguf", b""),
    }
    cases["NaN in a norm"] = valid_gguf(directory, "nan.gguf", lambda w: w["output_norm.weight"].__setitem__(3, np.nan))
    cases["missing tensor"] = valid_gguf(directory, "missing.gguf", lambda w: w.pop("blk.0.ffn_up.weight"))
    cases["shape disagrees"] = valid_gguf(directory, "shape.gguf", lambda w: w.__setitem__("blk.0.attn_q.weight", w["blk.0.attn_q.weight"][:16]))
    cases["unexpected tensor"] = valid_gguf(directory, "extra.gguf", lambda w: w.__setitem__("rope_freqs.weight", w["blk.0.attn_norm.weight"][:16]))
    # A string length past the end: the first key's length field follows the header.
    cases["string length past the end"] = _derived(directory, "strlen.gguf", good[:header] + struct.pack("<Q", 2**40) + good[header + 8 :])
    # Tensor info: n_dims u32, dims u64 each, type u32, offset u64.
    dims_at, n_dims = _tensor_info_at(good, "output_norm.weight")
    offset_at = dims_at + 4 + 8 * n_dims + 4
    offset = struct.unpack_from("<Q", good, offset_at)[0]
    cases["misaligned offset"] = _derived(directory, "misaligned.gguf", _patched(good, offset_at, "<Q", offset + 4))
    cases["offset past the end"] = _derived(directory, "offset.gguf", _patched(good, offset_at, "<Q", 2**50))
    cases["more than 2^40 elements"] = _derived(directory, "dims.gguf", _patched(good, dims_at + 4, "<Q", 2**41))
    embd_dims_at, _ = _tensor_info_at(good, "token_embd.weight")
    cases["dims overflow u64"] = _derived(directory, "overflow.gguf", _patched(good, embd_dims_at + 4, "<QQ", 2**62, 2**62))
    # Metadata array: key, value type u32 (9), item type u32, count u64.
    key = b"tokenizer.ggml.tokens"
    count_at = good.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 8
    cases["array count past the end"] = _derived(directory, "array.gguf", _patched(good, count_at, "<Q", 2**40))
    # Two tensors under one name: attn_k renamed attn_q (names of equal length).
    cases["duplicate tensor name"] = _derived(directory, "duplicate.gguf", good.replace(b"blk.0.attn_k.weight", b"blk.0.attn_q.weight"))
    cases["Inf in a norm"] = valid_gguf(directory, "inf.gguf", lambda w: w["blk.0.attn_norm.weight"].__setitem__(0, np.inf))
    # Weights that load but make every logit NaN.
    cases["NaN in a weight matrix"] = valid_gguf(directory, "nan-matrix.gguf", lambda w: w["blk.0.ffn_down.weight"].__setitem__((0, 0), np.nan))
    # A Q4_1 tensor (640 bytes) declared F32 (4096 bytes): its range runs into the next tensors.
    import gguf

    q4_1 = valid_gguf(directory, "q4_1.gguf", types={"blk.0.attn_q.weight": gguf.GGMLQuantizationType.Q4_1}).read_bytes()
    q_dims_at, q_n_dims = _tensor_info_at(q4_1, "blk.0.attn_q.weight")
    cases["type changed to a larger one"] = _derived(directory, "retyped.gguf", _patched(q4_1, q_dims_at + 4 + 8 * q_n_dims, "<I", int(gguf.GGMLQuantizationType.F32)))
    return cases


def checkpoint_cases(directory: Path, template: Path) -> dict[str, Path]:
    """name -> a broken Hugging Face checkpoint directory (copies of `template`)."""

    def variant(name: str, edit) -> Path:
        target = directory / name.replace(" ", "-")
        shutil.copytree(template, target)
        edit(target)
        return target

    def config_edit(**changes):
        def edit(target: Path) -> None:
            config = json.loads((target / "config.json").read_text())
            config.update(changes)
            (target / "config.json").write_text(json.dumps(config))

        return edit

    def write(name: str, data: bytes):
        return lambda target: (target / name).write_bytes(data)

    return {
        "negative n_embd": variant("negative n_embd", config_edit(n_embd=-32)),
        "string n_layer": variant("string n_layer", config_edit(n_layer="2")),
        "zero heads": variant("zero heads", config_edit(n_head=0)),
        "huge vocab": variant("huge vocab", config_edit(vocab_size=2**40)),
        "config not json": variant("config not json", write("config.json", b"{nope")),
        "config is a list": variant("config is a list", write("config.json", b"[1, 2]")),
        "truncated weights": variant("truncated weights", lambda t: (t / "model.safetensors").write_bytes((t / "model.safetensors").read_bytes()[:5000])),
        "weights header garbage": variant("weights header garbage", write("model.safetensors", struct.pack("<Q", 20) + b"\xff" * 20)),
        "tokenizer garbage": variant("tokenizer garbage", write("tokenizer.json", b"\x00\x01garbage")),
        "index points outside": variant(
            "index points outside",
            lambda t: ((t / "model.safetensors").unlink(), (t / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))),
        ),
        "pickle weights": variant("pickle weights", lambda t: ((t / "model.safetensors").unlink(), (t / "pytorch_model.bin").write_bytes(b"\x80\x04"))),
    }
