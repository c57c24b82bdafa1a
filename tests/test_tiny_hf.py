"""Tiny Hugging Face checkpoints of the Qwen2, Qwen3 and rope-scaled Llama families (fixtures/
tiny-hf, made and run by transformers itself; see make_fixtures.py there) against transformers'
last-position logits and its 16 greedy tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES

import gptgen
from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams

TINY = FIXTURES / "tiny-hf"
EXPECTED = json.loads((TINY / "expected.json").read_text())["checkpoints"]
ARCH = {"qwen2": "qwen2", "qwen3": "qwen3", "llama3": "llama", "llama-linear": "llama", "qwen2-yarn": "qwen2", "gemma3": "gemma3", "phi3": "phi3", "mistral": "llama"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tiny_checkpoint_matches_transformers(name):
    model = gptgen.load(str(TINY / name), threads=2)
    assert model.spec.arch == ARCH[name] and model.spec.format == "safetensors"
    for case in EXPECTED[name]:
        logits = model.new_session(len(case["ids"]) + 16).forward(case["ids"])[0]
        np.testing.assert_allclose(logits, case["last_logits"], atol=1e-4, rtol=0)
        result = generate(model, GenerationRequest(case["ids"], 16, SamplingParams(temperature=0), ignore_eos=True))
        assert result.tokens == case["greedy16"]
