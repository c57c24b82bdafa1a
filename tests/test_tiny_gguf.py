"""Tiny random GGUF files of each family and quant type (fixtures/tiny-gguf, quantized and run by
llama.cpp itself; see make_fixtures.py there) against llama.cpp's last-position logits and its
16 greedy tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES

import gptgen
from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams

TINY = FIXTURES / "tiny-gguf"
EXPECTED = json.loads((TINY / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_tiny_gguf_matches_llama_cpp(name):
    case, prompt = EXPECTED["files"][name], EXPECTED["prompt"]
    model = gptgen.load(str(TINY / name), threads=2)
    assert model.spec.arch == case["arch"] and set(model.spec.dtype_counts()) == {"f32", case["type"]}
    logits = model.new_session(len(prompt)).forward(prompt)[0]
    np.testing.assert_allclose(logits, case["last_logits"], atol=1e-3, rtol=0)
    result = generate(model, GenerationRequest(prompt, 16, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == case["greedy16"]
