"""Prompt-lookup decoding (--lookup N): greedy output identical token for token to decoding
without it, against llama.cpp's own greedy continuations and on summaries of the license
texts; with sampling, the speculative acceptance rule leaves each token's distribution as it
was (checked statistically on a small vocabulary)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, run_cli

import gptgen
from gptgen.generate import GenerationRequest, generate, generate_batch
from gptgen.lookup import lookup_draft
from gptgen.models import resolve
from gptgen.sampling import Sampler, SamplingParams, softmax

LICENSES = ["apache-2.0.txt", "mpl-2.0.txt"]


@pytest.fixture(scope="module")
def model():
    return gptgen.load(threads=2)


def test_the_draft_is_what_followed_the_last_occurrence_of_the_last_ngram():
    #           0  1  2  3  4  5  6  7  8  9
    sequence = [5, 6, 7, 8, 9, 5, 6, 7, 1, 5, 6, 7]
    # The trigram 5 6 7 last occurred at 5..7 (before the end), followed by 1 5 6 7.
    assert lookup_draft(sequence, 3) == [1, 5, 6]
    assert lookup_draft(sequence, 10) == [1, 5, 6, 7]
    # No trigram match, a bigram one: 2 3 occurred at 0..1.
    assert lookup_draft([2, 3, 4, 9, 2, 3], 2) == [4, 9]
    assert lookup_draft([1, 2, 3, 4], 5) == [] and lookup_draft([1, 2, 1, 2], 0) == []


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"])
def test_a_stepwise_pass_gives_each_row_the_logits_of_decoding_it_alone(name):
    # A pass of several rows sums them as llama.cpp sums a batch (other lanes, other kernels
    # for some types), which moves logits by up to ~1 on these models; stepwise it must not.
    m = gptgen.load(str(resolve(name)), threads=2)
    ids = m.tokenize("Water boils at a temperature of 100 degrees Celsius at sea level, and the quick brown fox")
    alone = m.new_session(64)
    alone.forward(ids[:8])
    one_at_a_time = np.stack([alone.forward([t])[0] for t in ids[8:]])
    together = m.new_session(64)
    together.forward(ids[:8])
    np.testing.assert_array_equal(together.forward(ids[8:], all_logits=True, stepwise=True), one_at_a_time)
    plain = m.new_session(64)
    plain.forward(ids[:8])
    assert not np.array_equal(plain.forward(ids[8:], all_logits=True), one_at_a_time)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
def test_greedy_with_lookup_is_llama_cpp_s_continuation(name):
    fixtures = {"smollm2-135m-instruct": "smollm2", "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder"}[name]
    reference = json.loads((FIXTURES / fixtures / "llama.cpp-reference.json").read_text())
    m = gptgen.load(str(resolve(name)), threads=2)
    for p in reference["prompts"]:
        result = generate(m, GenerationRequest(p["ids"], 48, SamplingParams(temperature=0), ignore_eos=True, lookup=5))
        assert result.tokens == p["greedy48"], p["prompt"]


def _summary_prompt(model, name: str) -> str:
    text = (FIXTURES / "texts" / name).read_text()[:2500]
    return model.request([{"role": "user", "content": f"Summarize this license in a few sentences, quoting it where you can:\n\n{text}"}]).prompt_tokens


@pytest.mark.parametrize("name", LICENSES)
def test_greedy_summaries_are_identical_with_lookup_and_drafts_are_taken(model, name):
    ids = _summary_prompt(model, name)
    plain = generate(model, GenerationRequest(ids, 128, SamplingParams(temperature=0)))
    looked = generate(model, GenerationRequest(ids, 128, SamplingParams(temperature=0), lookup=6))
    assert looked.tokens == plain.tokens and looked.text == plain.text
    assert [e.logprob for e in looked.logprobs] == [e.logprob for e in plain.logprobs]
    assert looked.timings.drafted > 0 and looked.timings.accepted > 0


def test_a_batch_with_lookup_gives_each_prompt_its_own_tokens(model):
    prompts = [_summary_prompt(model, name) for name in LICENSES] + [model.tokenize("Once upon a time")]
    options = dict(max_tokens=40, sampling=SamplingParams(temperature=0, repetition_penalty=1.1), stop=["\n\n"])
    alone = [generate(model, GenerationRequest(p, **options)) for p in prompts]
    together = dict(generate_batch(model, [GenerationRequest(p, lookup=4, **options) for p in prompts]))
    for i, result in enumerate(alone):
        assert (together[i].tokens, together[i].text, together[i].finish_reason) == (result.tokens, result.text, result.finish_reason)


def test_a_chat_with_lookup_keeps_its_cache_right_across_turns(model):
    turns = ["Repeat after me: the quick brown fox jumps over the lazy dog.", "Again, exactly."]
    plain, looked = model.chat_session(max_tokens=32, temperature=0), model.chat_session(max_tokens=32, temperature=0, lookup=4)
    for turn in turns:
        assert "".join(looked.reply(turn)) == "".join(plain.reply(turn))
    assert len(looked.conversation.cached) == looked.conversation.session.pos


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, top_k=0, top_p=1.0),
        SamplingParams(temperature=0.7, top_k=4, top_p=0.9, min_p=0.05),
    ],
    ids=["plain", "filtered"],
)
def test_verify_leaves_the_distribution_unchanged(params):
    logits = np.array([2.0, 1.5, 0.3, -0.5, 1.0, -2.0], dtype=np.float32)
    expected_sampler = Sampler(params.with_overrides(seed=0))
    candidates, weights = expected_sampler.distribution(logits)
    expected = np.zeros(logits.size)
    expected[candidates if candidates is not None else np.arange(logits.size)] = weights / weights.sum()
    draws = 40_000
    # Drafts: the likeliest token, an unlikely one, and one the filters remove.
    for draft in (0, 3, 5):
        sampler = Sampler(params.with_overrides(seed=1234 + draft))
        counts = np.bincount([sampler.verify(logits, [], draft) for _ in range(draws)], minlength=logits.size)
        assert counts[expected == 0].sum() == 0
        kept = expected > 0
        chi2 = float((((counts[kept] - draws * expected[kept]) ** 2) / (draws * expected[kept])).sum())
        # The 0.1% critical value of chi-square with (kept - 1) degrees of freedom is below 21.
        assert chi2 < 21, (draft, counts, expected * draws)


def test_sampling_with_lookup_is_reproducible(model):
    ids = _summary_prompt(model, "apache-2.0.txt")
    sampling = SamplingParams(temperature=0.8, seed=9)
    first = generate(model, GenerationRequest(ids, 48, sampling, lookup=4))
    again = generate(model, GenerationRequest(ids, 48, sampling, lookup=4))
    assert first.tokens == again.tokens and len(first.tokens) > 0


def test_the_command_line_takes_lookup_and_jsonl_too():
    prompt = "The cat sat on the mat. The cat sat on the mat. The cat"
    plain = json.loads(run_cli("generate", prompt, "-t", "0", "-n", "24", "--json").stdout)
    looked = json.loads(run_cli("generate", prompt, "-t", "0", "-n", "24", "--json", "--lookup", "4").stdout)
    assert looked["tokens"] == plain["tokens"] and looked["timings"]["accepted"] > 0
    line = json.dumps({"prompt": prompt, "max_tokens": 24, "temperature": 0, "lookup": 4})
    record = json.loads(run_cli("generate", "--jsonl", input=(line + "\n").encode()).stdout)
    assert record["tokens"] == plain["tokens"]
    bad = run_cli("generate", "hi", "--lookup", "-1")
    assert bad.returncode == 2
