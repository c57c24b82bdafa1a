"""Known models against llama.cpp on the same file: the built-in default (fixtures/smollm2),
Qwen2.5-Coder-0.5B-Instruct (fixtures/qwen2.5-coder) and Gemma 3 270M (fixtures/gemma-3-270m),
each made by its folder's make_reference.py. Each model is pulled into the cache as a user
would get it (once; later runs reuse it)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest

from conftest import FIXTURES

import gptgen
from gptgen.chat import render
from gptgen.generate import GenerationRequest, generate
from gptgen.models import REGISTRY, resolve
from gptgen.perplexity import perplexity
from gptgen.sampling import SamplingParams


@dataclass(frozen=True)
class Known:
    name: str
    fixtures: str
    # Teacher-forced argmax predictions that must agree with llama.cpp's.
    forced_agreement: float
    # Relative tolerance on perplexity and on its standard error.
    ppl_tolerance: float
    stderr_tolerance: float
    # ggml types whose real blocks are dequantized against gguf-py.
    block_types: frozenset[str]


# Every model's logits are bit-identical to llama.cpp's AVX2 build: identical predictions, and
# perplexity equal to 4 significant digits (the bar; the sums differ only in float64).
KNOWN = [
    Known("smollm2-135m-instruct", "smollm2", 1.0, 5e-5, 5e-4, frozenset({"Q4_1", "Q8_0"})),
    Known("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder", 1.0, 5e-5, 5e-4, frozenset({"Q5_0", "Q8_0", "Q6_K", "Q4_K"})),
    Known("gemma-3-270m", "gemma-3-270m", 1.0, 5e-5, 5e-4, frozenset({"Q5_0", "Q8_0", "Q6_K", "Q4_K"})),
]


def _reference(known: Known) -> dict:
    return json.loads((FIXTURES / known.fixtures / "llama.cpp-reference.json").read_text())


@functools.cache
def _load(name: str) -> gptgen.Model:
    return gptgen.load(str(resolve(name)), threads=2)


@pytest.fixture(scope="module", params=KNOWN, ids=lambda k: k.name)
def known(request):
    return request.param, _load(request.param.name), _reference(request.param)


def test_pulled_file_is_the_published_one(known):
    spec, model, _ = known
    digest = hashlib.sha256(model.spec.path.read_bytes()).hexdigest()
    assert digest == REGISTRY[spec.name].sha256


# llama.cpp's end-of-generation tokens of each file (llama_vocab_is_eog over the vocabulary):
# its eos, the turn ends and fill-in-the-middle tokens it recognises by their texts.
END_OF_GENERATION = {
    "smollm2-135m-instruct": {0, 2, 4},
    "qwen2.5-coder-0.5b-instruct": {128247, 151643, 151645, 151662, 151663, 151664},
    "gemma-3-270m": {1, 106, 212},
}


def test_generation_ends_where_llama_cpp_s_does(known):
    spec, model, _ = known
    assert set(model.tokenizer.eos_ids) == END_OF_GENERATION[spec.name]


def test_tokenization_matches_llama_cpp(known):
    spec, model, _ = known
    cases = json.loads((FIXTURES / spec.fixtures / "tokenization.json").read_text())
    assert len(cases) == 20
    for case in cases:
        assert model.tokenizer.encode(case["text"]) == case["ids_special"], case["text"]


def test_detokenization_round_trips_llama_cpp_s_ids(known):
    """llama.cpp's ids of each awkward string (special tokens as plain text) decode to the string,
    whole and streamed one token at a time (no character split between pieces)."""
    spec, model, _ = known
    tokenizer = model.tokenizer
    for case in json.loads((FIXTURES / spec.fixtures / "tokenization.json").read_text()):
        ids = case["ids_plain"]
        if tokenizer.add_bos and ids[:1] == [tokenizer.bos_id]:
            ids = ids[1:]
        assert tokenizer.decode(ids) == case["text"]
        stream = tokenizer.stream()
        assert "".join(stream.push(i) for i in ids) + stream.finish() == case["text"]


@pytest.mark.parametrize("i", range(4))
def test_prompt_ids_and_greedy_continuation_match_llama_cpp(known, i):
    spec, model, reference = known
    p = reference["prompts"][i]
    assert model.tokenizer.encode(p["prompt"]) == p["ids"]
    result = generate(model, GenerationRequest(p["ids"], 48, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == p["greedy48"]


@pytest.mark.parametrize("i", range(4))
def test_last_position_logits_equal_llama_cpp(known, i):
    spec, model, reference = known
    p = reference["prompts"][i]
    # Every row's logits, as llama.cpp made the fixture (logits_all): then its last block's
    # feed-forward, too, runs over every row.
    logits = model.new_session(len(p["ids"])).forward(p["ids"], all_logits=True)[-1]
    assert int(np.argmax(logits)) == p["last_top10_ids"][0]
    # The engine repeats the arithmetic of llama.cpp's AVX2 build, summation order included.
    np.testing.assert_array_equal(logits[p["last_top10_ids"]], np.float32(p["last_top10_logits"]))


def test_a_prompt_past_the_sliding_window_continues_as_llama_cpp():
    """Gemma 3's local layers see 512 positions: a 1,200-token prompt (evaluated, as llama.cpp
    does, in passes of 512) through their ring caches, then 32 greedy tokens."""
    model = _load("gemma-3-270m")
    long = _reference(next(k for k in KNOWN if k.name == "gemma-3-270m"))["long_prompt"]
    ids = long["ids"]
    assert model.tokenizer.encode((FIXTURES / "texts" / f"{long['text']}.txt").read_text())[: len(ids)] == ids
    session = model.new_session(len(ids))
    # llama.cpp's last pass of 512 (rows 1024..) with every row's logits, as it made the fixture.
    session.forward(ids[:1024])
    logits = session.forward(ids[1024:], all_logits=True)[-1]
    np.testing.assert_array_equal(logits[long["top_logits"]["ids"]], np.float32(long["top_logits"]["logits"]))
    result = generate(model, GenerationRequest(ids, 32, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == long["greedy"]


def test_rewinding_a_ring_cache_keeps_what_its_window_needs():
    """A session rewound within reach of its rings (each holds a window and a pass, 1,056
    positions) goes on from there and agrees with a fresh one; rewound further, it starts over."""
    model = _load("gemma-3-270m")
    ids = _reference(next(k for k in KNOWN if k.name == "gemma-3-270m"))["long_prompt"]["ids"]
    session = model.new_session(len(ids))
    session.forward(ids[:1150])
    session.rewind(1000)
    assert session.pos == 1000
    again = session.forward(ids[1000:1150])[-1]
    fresh = model.new_session(len(ids)).forward(ids[:1150])[-1]
    # The same positions in passes cut elsewhere: sums of other row groupings, not other values.
    np.testing.assert_allclose(again, fresh, atol=1e-3, rtol=0)
    assert int(np.argmax(again)) == int(np.argmax(fresh))
    session.rewind(100)
    assert session.pos == 0


def test_chat_template_and_reply_match_llama_cpp(known):
    _, model, reference = known
    chat = reference["chats"][0]
    rendered = render(model.spec.chat_template, chat["messages"], **model.special_strings())
    assert rendered == chat["rendered"]
    ids = model.tokenizer.encode(rendered)
    assert ids == chat["ids"]
    result = generate(model, GenerationRequest(ids, 40, SamplingParams(temperature=0), ignore_eos=True))
    assert result.tokens == chat["greedy40"]
    assert result.text == chat["greedy40_text"]


def test_teacher_forced_top1_agrees_with_llama_cpp(known):
    spec, model, reference = known
    forced = reference["teacher_forced"]
    ids = forced["ids"]
    text = (FIXTURES / "texts" / f"{forced['text']}.txt").read_text()
    assert model.tokenizer.encode(text)[: len(ids)] == ids
    logits = model.new_session(len(ids)).forward(ids, all_logits=True)
    agreement = (logits.argmax(axis=1) == np.array(forced["argmax"])).mean()
    assert agreement >= spec.forced_agreement, agreement


@pytest.mark.parametrize("name", ["apache-2.0", "mpl-2.0"])
def test_perplexity_agrees_with_llama_cpp(known, name):
    spec, model, reference = known
    ref = reference["perplexity"][name]
    result = perplexity(model, (FIXTURES / "texts" / f"{name}.txt").read_text(), n_ctx=512)
    assert (result.n_tokens, result.chunks, result.scored) == (ref["n_tokens"], ref["chunks"], ref["scored"])
    assert abs(result.ppl - ref["ppl"]) / ref["ppl"] < spec.ppl_tolerance, (result.ppl, ref["ppl"])
    assert abs(result.ppl_stderr - ref["ppl_stderr"]) / ref["ppl_stderr"] < spec.stderr_tolerance


def test_real_blocks_dequantize_like_gguf_py(known):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from gptgen import _native

    spec, model, _ = known
    reader = GGUFReader(model.spec.path)
    seen = set()
    for t in reader.tensors:
        name = t.tensor_type.name
        if name in spec.block_types and name not in seen:
            seen.add(name)
            rows = np.asarray(t.data)[:64]
            ours = _native.dequantize(rows.reshape(-1).view(np.uint8), name.lower(), int(t.shape[0]))
            np.testing.assert_array_equal(ours.reshape(64, -1), dequantize(rows, t.tensor_type))
    assert seen == spec.block_types
