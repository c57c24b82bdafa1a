"""gptgen's quantized dot products against llama.cpp's own (fixtures/quant-dots, computed by the
AVX2 build's ggml kernels; see make_fixtures.py there), bit for bit, and the dequantizers of the
types gguf-py cannot quantize against gguf-py's, on blocks llama.cpp quantized and on random
blocks."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from conftest import FIXTURES

from gptgen import _native

DOTS = np.load(FIXTURES / "quant-dots" / "dots.npz")
PLAIN = sorted({key.split(".")[0] for key in DOTS if key.endswith(".dot")})
Q = gguf.GGMLQuantizationType


def _bits(value) -> int:
    return int(np.float32(value).view(np.uint32))


@pytest.mark.parametrize("name", PLAIN)
def test_dot_equals_llama_cpp_vec_dot(name):
    rows = sorted(key for key in DOTS if key.startswith(f"{name}.") and key.endswith(".dot"))
    assert len(rows) == 3
    for key in rows:
        prefix = key[: -len(".dot")]
        got = _native.quant_dot(DOTS[f"{prefix}.weights"], name, DOTS[f"{prefix}.x"])
        assert _bits(got) == _bits(DOTS[key][0]), f"{prefix}: {got!r} vs llama.cpp {DOTS[key][0]!r}"


@pytest.mark.parametrize("kernel", ["gemv", "gemm"])
def test_iq4_nl_dot_equals_llama_cpp_repacked_kernels(kernel):
    """llama.cpp repacks IQ4_NL matrices of 8k rows; its GEMV (one activation row) and its GEMM
    (groups of four rows, their own activation quantizer) must both give gptgen's one dot."""
    weights, x, want = DOTS["iq4_nl.weights"], DOTS["iq4_nl.x"], DOTS[f"iq4_nl.{kernel}"]
    got = np.array([[_native.quant_dot(w, "iq4_nl", row) for w in weights] for row in x], dtype=np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("qtype", [Q.Q2_K, Q.Q3_K, Q.IQ4_XS, Q.IQ4_NL, Q.Q5_K, Q.Q6_K])
def test_dequantize_matches_gguf_py_on_llama_cpp_blocks(qtype):
    name = qtype.name.lower()
    rows = [DOTS[key] for key in sorted(DOTS) if key.startswith(f"{name}.") and key.endswith(".weights")]
    assert rows
    for raw in rows:
        raw = np.ascontiguousarray(raw).reshape(-1)
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        ours = _native.dequantize(raw, name, raw.size // type_size * block_size)
        np.testing.assert_array_equal(ours, dequantize(raw.reshape(-1, type_size), qtype).reshape(-1))


@pytest.mark.parametrize("qtype, scale_offsets", [(Q.Q2_K, (80, 82)), (Q.Q3_K, (108,)), (Q.IQ4_NL, (0,)), (Q.IQ4_XS, (0,))])
def test_dequantize_matches_gguf_py_on_random_blocks(qtype, scale_offsets):
    """Random bytes with sane f16 scales (random f16 bits can be NaN)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(type_size)
    raw = rng.integers(0, 256, size=(64, type_size), dtype=np.uint8)
    for offset in scale_offsets:
        raw[:, offset : offset + 2] = rng.uniform(1e-3, 0.05, size=(64, 1)).astype(np.float16).view(np.uint8)
    ours = _native.dequantize(raw.reshape(-1), qtype.name.lower(), 256)
    np.testing.assert_array_equal(ours, dequantize(raw, qtype).reshape(-1))


def test_quant_dot_refuses_mismatched_lengths_and_float_types():
    w = DOTS["q2_k.0.weights"]
    with pytest.raises(ValueError, match="not one"):
        _native.quant_dot(np.concatenate([w, w]), "q2_k", np.ones(256, np.float32))
    with pytest.raises(ValueError, match="whole number of rows"):
        _native.quant_dot(w, "q2_k", np.ones(512, np.float32))
    with pytest.raises(ValueError, match="not a quantized type"):
        _native.quant_dot(np.zeros(1024, np.uint8), "f32", np.ones(256, np.float32))
