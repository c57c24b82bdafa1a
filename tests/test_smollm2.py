"""The built-in default model against llama.cpp on the same file (fixtures/smollm2/README.md).
The model is pulled into the cache as a user would get it (once; later runs reuse it)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from conftest import FIXTURES

import gptgen
from gptgen.chat import render
from gptgen.generate import GenerationRequest, generate
from gptgen.models import REGISTRY, resolve
from gptgen.perplexity import perplexity
from gptgen.sampling import SamplingParams, log_softmax

REFERENCE = json.loads((FIXTURES / "smollm2" / "llama.cpp-reference.json").read_text())


@pytest.fixture(scope="module")
def smollm2():
    return gptgen.load(str(resolve("smollm2-135m-instruct")), threads=2)


def test_pulled_file_is_the_published_one(smollm2):
    digest = hashlib.sha256(smollm2.spec.path.read_bytes()).hexdigest()
    assert digest == REGISTRY["smollm2-135m-instruct"].sha256


def test_tokenization_matches_llama_cpp(smollm2):
    cases = json.loads((FIXTURES / "smollm2" / "tokenization.json").read_text())
    assert len(cases) == 20
    for case in cases:
        assert smollm2.tokenizer.encode(case["text"]) == case["ids_special"], case["text"]


@pytest.mark.parametrize("i", range(len(REFERENCE["prompts"])))
def test_prompt_ids_and_greedy_continuation_match_llama_cpp(smollm2, i):
    p = REFERENCE["prompts"][i]
    assert smollm2.tokenizer.encode(p["prompt"]) == p["ids"]
    result = generate(smollm2, GenerationRequest(p["ids"], 48, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == p["greedy48"]


@pytest.mark.parametrize("i", range(len(REFERENCE["prompts"])))
def test_last_position_logits_close_to_llama_cpp(smollm2, i):
    p = REFERENCE["prompts"][i]
    logits = smollm2.new_session(len(p["ids"])).forward(p["ids"])[0]
    assert int(np.argmax(logits)) == p["last_top10_ids"][0]
    # The engine repeats llama.cpp's arithmetic (see rust/ops/attention.rs): on an AVX2 machine
    # the logits agree to the last bit; the tolerance only absorbs a different summation order.
    np.testing.assert_allclose(logits[p["last_top10_ids"]], p["last_top10_logits"], atol=1e-3)


def test_chat_template_and_reply_match_llama_cpp(smollm2):
    chat = REFERENCE["chats"][0]
    rendered = render(smollm2.spec.chat_template, chat["messages"])
    assert rendered == chat["rendered"]
    ids = smollm2.tokenizer.encode(rendered)
    assert ids == chat["ids"]
    result = generate(smollm2, GenerationRequest(ids, 40, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == chat["greedy40"]
    assert result.text == chat["greedy40_text"]


def test_teacher_forced_top1_agrees_with_llama_cpp(smollm2):
    forced = REFERENCE["teacher_forced"]
    ids = forced["ids"]
    text = (FIXTURES / "texts" / f"{forced['text']}.txt").read_text()
    assert smollm2.tokenizer.encode(text)[:512] == ids
    logits = smollm2.new_session(len(ids)).forward(ids, all_logits=True)
    agreement = (logits.argmax(axis=1) == np.array(forced["argmax"])).mean()
    assert agreement >= 0.99, agreement


@pytest.mark.parametrize("name", ["apache-2.0", "mpl-2.0"])
def test_perplexity_within_one_percent_of_llama_cpp(smollm2, name):
    ref = REFERENCE["perplexity"][name]
    result = perplexity(smollm2, (FIXTURES / "texts" / f"{name}.txt").read_text(), n_ctx=512)
    assert (result.n_tokens, result.chunks, result.scored) == (ref["n_tokens"], ref["chunks"], ref["scored"])
    assert abs(result.ppl - ref["ppl"]) / ref["ppl"] < 0.01, (result.ppl, ref["ppl"])
    assert abs(result.ppl_stderr - ref["ppl_stderr"]) / ref["ppl_stderr"] < 0.05


def test_real_blocks_dequantize_like_gguf_py(smollm2):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from gptgen import _native

    reader = GGUFReader(smollm2.spec.path)
    seen = set()
    for t in reader.tensors:
        name = t.tensor_type.name
        if name in ("Q4_1", "Q8_0") and name not in seen:
            seen.add(name)
            rows = np.asarray(t.data)[:64]
            ours = _native.dequantize(rows.reshape(-1).view(np.uint8), name.lower(), int(t.shape[0]))
            np.testing.assert_array_equal(ours.reshape(64, -1), dequantize(rows, t.tensor_type))
    assert seen == {"Q4_1", "Q8_0"}
