"""SentencePiece vocabularies (GGUF `tokenizer.ggml.model = llama`): a tiny `llama` file with a
made-up vocabulary (fixtures/tiny-spm, made and run by llama.cpp; see make_fixtures.py there)
against llama.cpp's token ids, detokenization, logits and greedy tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES

import gptgen
from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams

TINY = FIXTURES / "tiny-spm"
EXPECTED = json.loads((TINY / "expected.json").read_text())


@pytest.fixture(scope="module")
def model():
    return gptgen.load(str(TINY / "tiny-spm.gguf"), threads=2)


@pytest.mark.parametrize("case", EXPECTED["tokenization"], ids=lambda c: repr(c["text"]))
def test_token_ids_and_text_match_llama_cpp(model, case):
    # encode adds BOS (the file asks for it); llama.cpp's ids were taken without.
    ids = model.tokenizer.encode(case["text"])
    assert ids[0] == model.tokenizer.bos_id and ids[1:] == case["ids_special"]
    assert model.tokenizer.decode(case["ids_plain"]) == case["detokenized"]
    # Streamed token by token, the pieces join to the same text (byte tokens held back until
    # their character is whole).
    stream = model.tokenizer.stream()
    assert "".join(stream.push(i) for i in case["ids_plain"]) + stream.finish() == case["detokenized"]


def test_tiny_spm_model_matches_llama_cpp(model):
    assert model.tokenizer.encode(EXPECTED["prompt_text"]) == EXPECTED["prompt"]
    logits = model.new_session(64).forward(EXPECTED["prompt"], all_logits=True)[-1]
    np.testing.assert_allclose(logits, EXPECTED["last_logits"], atol=1e-3, rtol=0)
    result = generate(model, GenerationRequest(EXPECTED["prompt"], 16, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == EXPECTED["greedy16"]
