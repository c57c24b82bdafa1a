"""The generation surface: processors against NumPy statements of their definitions, the
no-repeat-ngram sequences from transformers, stop strings, lengths, and the Python API."""

from __future__ import annotations

import numpy as np
import pytest

from gptgen.errors import GptgenError
from gptgen.generate import StopFilter
from gptgen.sampling import (
    Sampler,
    SamplingParams,
    apply_logit_bias,
    apply_presence_frequency,
    apply_repetition_penalty,
    banned_ngram_tokens,
    min_p_filter,
    typical_filter,
)


@pytest.mark.parametrize("i", range(4))
def test_no_repeat_ngram_greedy_matches_transformers(tiny_gpt2, tiny_gpt2_expected, i):
    expected, _ = tiny_gpt2_expected
    p = expected["prompts"][i]
    result = tiny_gpt2.generate(p["prompt"], max_tokens=24, temperature=0, no_repeat_ngram_size=2, ignore_eos=True)
    assert result.tokens == p["greedy24_no_repeat_ngram_size_2"]


def test_repetition_penalty_definition():
    logits = np.array([2.0, -1.0, 0.5, -3.0, 1.0])
    out = apply_repetition_penalty(logits, [0, 1, 1, 3], 2.0)
    np.testing.assert_array_equal(out, [1.0, -2.0, 0.5, -6.0, 1.0])


def test_presence_and_frequency_penalties_definition():
    logits = np.zeros(4)
    out = apply_presence_frequency(logits, [1, 1, 1, 2], presence=0.5, frequency=0.25)
    np.testing.assert_allclose(out, [0.0, -(0.5 + 0.75), -(0.5 + 0.25), 0.0])


def test_penalty_window_is_the_last_n_tokens():
    sampler = Sampler(SamplingParams(temperature=0, repetition_penalty=100.0, repeat_last_n=2))
    logits = np.array([5.0, 4.0, 3.0])
    assert sampler(logits, [0, 2, 2]) == 0  # token 0 is outside the window of the last 2
    assert sampler(logits, [2, 0]) == 1


def test_banned_ngrams_definition():
    seq = [1, 2, 3, 1, 2, 4, 1]
    # Last 2 tokens (4, 1): bigram prefixes (1,) ... for n=2 the last token 1 was followed by 2.
    assert banned_ngram_tokens(seq, 2) == {2}
    assert banned_ngram_tokens([1, 2, 1, 2], 3) == {1}
    assert banned_ngram_tokens([5], 3) == set()


def test_logit_bias_min_p_and_typical_definitions():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    np.testing.assert_allclose(apply_logit_bias(logits, {2: 1.0, 9: 5.0}), logits + [0, 0, 1.0, 0])
    kept = np.isfinite(min_p_filter(logits, 0.35))
    assert kept.tolist() == [True, True, False, False]  # p >= 0.35 * 0.5
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    entropy = -(probs * np.log(probs)).sum()
    order = np.argsort(np.abs(-np.log(probs) - entropy), kind="stable")
    cumulative = np.cumsum(probs[order])
    n_keep = int(np.searchsorted(cumulative, 0.6, side="right")) + 1
    assert set(np.flatnonzero(np.isfinite(typical_filter(logits, 0.6)))) == set(order[:n_keep])


def test_stop_filter_holds_back_only_possible_stop_prefixes():
    f = StopFilter(["###", "\n\n"])
    assert f.push("Hello #") == ("Hello ", False)
    assert f.push("# not") == ("## not", False)
    assert f.push(" done\n") == (" done", False)
    assert f.push("\nmore") == ("", True)


@pytest.mark.parametrize("stop", [" diagn", "agn", "Zzz"])
def test_stop_string_streamed_and_whole_agree(tiny_gpt2, stop):
    args = dict(max_tokens=12, temperature=0, ignore_eos=True, stop=[stop])
    whole = tiny_gpt2.generate("Hello", **args)
    streamed = "".join(tiny_gpt2.stream("Hello", **args))
    assert streamed == whole.text and stop not in whole.text
    unstopped = tiny_gpt2.generate("Hello", max_tokens=12, temperature=0, ignore_eos=True).text
    if stop in unstopped:
        assert whole.finish_reason == "stop" and whole.text == unstopped[: unstopped.index(stop)]
    else:
        assert whole.text == unstopped and whole.finish_reason == "length"


def test_max_length_counts_the_prompt(tiny_gpt2):
    result = tiny_gpt2.generate("Once upon a time", max_length=10, temperature=0, ignore_eos=True)
    assert len(result.prompt_tokens) + len(result.tokens) == 10
    with pytest.raises(GptgenError, match="shorter than the prompt"):
        tiny_gpt2.generate("Once upon a time", max_length=2)


def test_truncate_keeps_the_end_of_the_prompt(tiny_gpt2):
    text = " word" * 140
    with pytest.raises(GptgenError, match="context"):
        tiny_gpt2.generate(text, max_tokens=10)
    result = tiny_gpt2.generate(text, max_tokens=10, truncate=True, temperature=0, ignore_eos=True)
    full = tiny_gpt2.tokenize(text)
    assert result.prompt_tokens == full[-(128 - 10) :] and len(result.tokens) == 10


def test_python_api(tiny_gpt2, tiny_gpt2_expected):
    expected, _ = tiny_gpt2_expected
    p = expected["prompts"][1]
    assert tiny_gpt2.tokenize(p["prompt"]) == p["ids"]
    assert tiny_gpt2.detokenize(p["ids"]) == p["prompt"]
    result = tiny_gpt2.generate(p["prompt"], max_tokens=24, temperature=0, ignore_eos=True)
    assert result.tokens == p["greedy24"] and str(result) == result.text
    assert "".join(tiny_gpt2.stream(p["prompt"], max_tokens=24, temperature=0, ignore_eos=True)) == result.text
    with pytest.raises(GptgenError, match="unknown generation option"):
        tiny_gpt2.generate("x", max_tokenz=3)


def test_seeded_sampling_is_identical_across_thread_counts():
    import gptgen
    from conftest import TINY_GPT2

    runs = [gptgen.load(str(TINY_GPT2), threads=t).generate("Hi", max_tokens=20, temperature=1.0, seed=5, ignore_eos=True).tokens for t in (1, 2, 2)]
    assert runs[0] == runs[1] == runs[2]


def test_chat_api_uses_the_template():
    import gptgen
    from conftest import FIXTURES

    model = gptgen.load(str(FIXTURES / "tiny-llama"))
    messages = [{"role": "user", "content": "hi"}]
    result = model.chat(messages, max_tokens=3, temperature=0, ignore_eos=True)
    rendered = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert result.prompt_tokens == model.tokenize(rendered)


def test_batched_generation_equals_separate_runs():
    import gptgen
    from conftest import FIXTURES

    model = gptgen.load(str(FIXTURES / "tiny-llama"), threads=2)
    prompts = ["Once upon a time", "x = [1, 2, 3]", "a", "The weather today is quite nice and"]
    batched = model.generate_batch(prompts, max_tokens=12, temperature=0, ignore_eos=True)
    for prompt, result in zip(prompts, batched):
        single = model.generate(prompt, max_tokens=12, temperature=0, ignore_eos=True)
        assert result.tokens == single.tokens and result.text == single.text
    # Different lengths finish at different steps; seeds s, s+1, ... make sampling reproducible.
    sampled = model.generate_batch(["Hi"] * 3, max_tokens=8, temperature=1.0, seed=4, ignore_eos=True)
    again = [model.generate("Hi", max_tokens=8, temperature=1.0, seed=4 + i, ignore_eos=True) for i in range(3)]
    assert [r.tokens for r in sampled] == [r.tokens for r in again]


def test_engine_forward_batch_logits_equal_separate_sessions(tiny_gpt2):
    engine = tiny_gpt2.engine
    prompts = [[15496, 11, 995], [464, 2068], [7454, 2402, 257, 640, 11]]
    sessions = [engine.new_session(16) for _ in prompts]
    for s, p in zip(sessions, prompts):
        s.forward(p)
    steps = [[100], [200], [300]]
    batched = engine.forward_batch(sessions, steps)
    assert batched.shape == (3, 50257)
    for p, step, row in zip(prompts, steps, batched):
        alone = engine.new_session(16)
        alone.forward(p)
        np.testing.assert_array_equal(alone.forward(step)[0], row)
    assert [s.pos for s in sessions] == [4, 3, 6]
    with pytest.raises(ValueError, match="one token list per session"):
        engine.forward_batch(sessions, [[1]])
