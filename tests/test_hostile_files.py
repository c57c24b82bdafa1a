"""Malformed model files end in one `error:` line and exit status 1: never a traceback, a
crash, a hang or a huge allocation. The files come from the generators in malformed.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY_GPT2, run_cli
from malformed import checkpoint_cases, gguf_cases

TEXT = Path(__file__).parent / "fixtures" / "texts" / "apache-2.0.txt"


def _assert_clean_failure(out, name):
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 1, f"{name}: exit {out.returncode}, stderr {err[-500:]}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"{name}: {err[-500:]}"
    assert "Traceback" not in err and out.stdout == b""


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    return gguf_cases(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_cases(tmp_path_factory.mktemp("ckpt"), TINY_GPT2)


@pytest.mark.parametrize(
    "name",
    ["bad magic", "wrong version", "truncated header", "truncated metadata", "truncated tensor data", "huge tensor count", "huge kv count", "empty file", "string length past the end",
     "NaN in a norm", "missing tensor", "shape disagrees", "unexpected tensor", "misaligned offset", "offset past the end", "more than 2^40 elements",
     "dims overflow u64", "array count past the end", "duplicate tensor name", "Inf in a norm", "NaN in a weight matrix",
     "type changed to a larger one"],
)
def test_malformed_gguf(gguf_files, name):
    _assert_clean_failure(run_cli("generate", "hi", "-m", str(gguf_files[name]), "-n", "1", timeout=60), name)


def test_nan_logits_end_in_an_error_naming_the_model(gguf_files):
    path = gguf_files["NaN in a weight matrix"]
    for command in (("generate", "hi", "-n", "4", "-t", "0"), ("generate", "hi", "-n", "4", "--json"), ("perplexity", str(TEXT), "--ctx", "16")):
        out = run_cli(*command, "-m", str(path), timeout=60)
        _assert_clean_failure(out, f"NaN logits: {command[0]}")
        assert str(path).encode() in out.stderr and b"NaN" in out.stderr, out.stderr


def test_overlapping_tensor_data_is_refused(gguf_files):
    out = run_cli("info", "-m", str(gguf_files["type changed to a larger one"]), timeout=60)
    _assert_clean_failure(out, "overlap")
    assert b"blk.0.attn_q.weight overlaps tensor" in out.stderr, out.stderr


@pytest.mark.parametrize(
    "name",
    ["negative n_embd", "string n_layer", "zero heads", "huge vocab", "config not json", "config is a list", "truncated weights", "weights header garbage", "tokenizer garbage", "index points outside", "pickle weights"],
)
def test_malformed_checkpoint(checkpoints, name):
    _assert_clean_failure(run_cli("generate", "hi", "-m", str(checkpoints[name]), "-n", "1", timeout=60), name)


def test_gguf_with_inconsistent_merges_and_unknown_tensor_type(tmp_path):
    import struct

    import gguf
    import numpy as np

    from checkpoints import random_llama_weights, write_llama_gguf

    weights = random_llama_weights(np.random.default_rng(1), n_vocab=257, n_embd=32, n_layer=1, n_head=2, n_kv_head=1, n_ff=64)
    path = tmp_path / "merges.gguf"
    # A merge of tokens that are not in the vocabulary.
    write_llama_gguf(path, weights, n_head=2, n_kv_head=1, rope_base=1e4, n_ctx=32, types={}, merges=["zzzz yyyy"])
    out = run_cli("generate", "hi", "-m", str(path), "-n", "1")
    _assert_clean_failure(out, "inconsistent merges")
    assert b"merges" in out.stderr, out.stderr

    # The first tensor's type id (the u32 after its dims) set to an id ggml does not define.
    from malformed import valid_gguf

    good = valid_gguf(tmp_path).read_bytes()
    reader = gguf.GGUFReader(tmp_path / "valid.gguf")
    first = reader.tensors[0]
    name_bytes = first.name.encode()
    at = good.index(struct.pack("<Q", len(name_bytes)) + name_bytes) + 8 + len(name_bytes)
    n_dims = struct.unpack_from("<I", good, at)[0]
    type_at = at + 4 + 8 * n_dims
    broken = bytearray(good)
    struct.pack_into("<I", broken, type_at, 200)
    bad = tmp_path / "type.gguf"
    bad.write_bytes(bytes(broken))
    out = run_cli("generate", "hi", "-m", str(bad), "-n", "1")
    _assert_clean_failure(out, "unknown tensor type")
    assert b"GGMLQuantizationType" in out.stderr, out.stderr

    # A type ggml defines but gptgen does not support (Q8_1, an activation type): named, with the
    # supported list.
    struct.pack_into("<I", broken, type_at, gguf.GGMLQuantizationType.Q8_1)
    bad.write_bytes(bytes(broken))
    out = run_cli("generate", "hi", "-m", str(bad), "-n", "1")
    _assert_clean_failure(out, "unsupported tensor type")
    assert b"type Q8_1 is not supported (supported: " in out.stderr and b"IQ4_XS" in out.stderr, out.stderr
