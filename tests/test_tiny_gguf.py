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
# Files whose 257-row token embedding (the tied head) llama.cpp does not repack (its row count
# is not a multiple of 8), so it multiplies it in other kernels' orders than gptgen's, which
# follows the repacked kernels (those of every matrix of real models) for Q4_0, Q4_K and
# IQ4_NL: their logits agree to float rounding, the others' bit for bit.
NOT_REPACKED = {"qwen2-q4_0.gguf": 1e-5, "qwen2-q4_k.gguf": 1e-5, "qwen2-iq4_nl.gguf": 1e-5}


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_tiny_gguf_matches_llama_cpp(name):
    case, prompt = EXPECTED["files"][name], EXPECTED["prompt"]
    model = gptgen.load(str(TINY / name), threads=2)
    assert model.spec.arch == case["arch"] and set(model.spec.dtype_counts()) == {"f32", case["type"]}
    # Every row's logits, as llama.cpp made the fixture (logits_all).
    logits = model.new_session(len(prompt)).forward(prompt, all_logits=True)[-1]
    np.testing.assert_allclose(logits, case["last_logits"], atol=NOT_REPACKED.get(name, 0.0), rtol=0)
    result = generate(model, GenerationRequest(prompt, 16, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == case["greedy16"]


def test_a_sentencepiece_llama_file_tokenizes_and_runs_as_llama_cpp():
    """A `llama` file with a SentencePiece vocabulary (Mistral, Llama 2, TinyLlama): llama.cpp's
    ids for awkward text (BOS, spaces, CJK, accents, byte fallback), its logits and 16 greedy
    tokens after them."""
    case = EXPECTED["files"]["llama-spm-q8_0.gguf"]
    model = gptgen.load(str(TINY / "llama-spm-q8_0.gguf"), threads=2)
    ids = model.tokenizer.encode(case["text"])
    assert ids == case["text_ids"]
    logits = model.new_session(len(ids)).forward(ids, all_logits=True)[-1]
    np.testing.assert_array_equal(logits, np.float32(case["text_last_logits"]))
    result = generate(model, GenerationRequest(ids, 16, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == case["text_greedy16"]


def test_info_names_the_sliding_window():
    from conftest import run_cli

    out = run_cli("info", "-m", str(TINY / "gemma3-q8_0.gguf"))
    assert out.returncode == 0, out.stderr
    # The file's sliding_window 8 and pattern 2 (layer 0 windowed), rope.freq_base_swa 10000.
    cells = " ".join(out.stdout.decode().replace("\u2502", " ").split())  # the table's cells, unwrapped
    assert "sliding window 8 on 1 of 2 layers, rope base 10000" in cells
