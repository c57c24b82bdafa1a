"""SentencePiece vocabularies (GGUF `tokenizer.ggml.model = llama`): a tiny `llama` file with a
made-up vocabulary (fixtures/tiny-spm, made and run by llama.cpp; see make_fixtures.py there)
against llama.cpp's token ids, detokenization, logits and greedy tokens; and the same
vocabulary as a Hugging Face tokenizer.json (as transformers converts it, fixtures/tiny-spm/hf)
against transformers' ids and llama.cpp's text."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES

import gptgen
from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams
from gptgen.tokenizer import Tokenizer

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


HF_EXPECTED = json.loads((TINY / "hf" / "expected.json").read_text())


@pytest.mark.parametrize("i", range(len(EXPECTED["tokenization"])))
def test_a_sentencepiece_tokenizer_json_encodes_as_transformers_and_decodes_as_llama_cpp(i):
    """A checkpoint's SentencePiece-kind tokenizer.json: transformers' ids (its Metaspace puts no
    second U+2581 before text that starts with a space, unlike llama.cpp), and the text of
    llama.cpp's ids as llama.cpp writes it, whole and streamed."""
    tokenizer = Tokenizer.from_hf_dir(TINY / "hf", bos_id=1, eos_ids=[2])
    case, hf_case = EXPECTED["tokenization"][i], HF_EXPECTED["tokenization"][i]
    assert tokenizer.encode(hf_case["text"]) == hf_case["ids"]
    assert tokenizer.decode(case["ids_plain"]) == case["detokenized"]
    stream = tokenizer.stream()
    assert "".join(stream.push(t) for t in case["ids_plain"]) + stream.finish() == case["detokenized"]
