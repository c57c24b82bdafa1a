"""The sampling schema (options.SamplingParams) and what is made from it: the CLI's sampling
options, the --jsonl keys, the Python API's keyword arguments, the model's generation defaults
resolved over llama.cpp's; and ChatSession, the library's conversation that `gptgen chat` runs."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from gptgen.errors import GptgenError
from gptgen.options import GenerateOptions, SamplingParams

TINY_LLAMA = FIXTURES / "tiny-llama"


def test_unset_parameters_resolve_to_the_model_defaults_then_llama_cpps():
    model_defaults = SamplingParams(temperature=0.7, top_k=50, top_p=0.9)
    resolved = SamplingParams(top_k=5, seed=3).over(model_defaults).resolved()
    assert (resolved.temperature, resolved.top_k, resolved.top_p, resolved.seed) == (0.7, 5, 0.9, 3)
    assert (resolved.min_p, resolved.typical_p, resolved.repetition_penalty, resolved.repeat_last_n, resolved.logit_bias) == (0.0, 1.0, 1.0, 64, {})
    llama_cpp = SamplingParams().resolved()
    assert (llama_cpp.temperature, llama_cpp.top_k, llama_cpp.top_p, llama_cpp.seed) == (0.8, 40, 0.95, None)
    assert SamplingParams().set_values() == {} and SamplingParams(top_p=0.5).set_values() == {"top_p": 0.5}


def test_parameters_are_checked_when_made_and_when_changed():
    with pytest.raises(GptgenError, match="top-p"):
        SamplingParams(top_p=0)
    with pytest.raises(GptgenError, match="min-p"):
        GenerateOptions().with_changes(min_p=2)
    with pytest.raises(GptgenError, match="logit bias"):
        SamplingParams(logit_bias={3: float("nan")})
    with pytest.raises(GptgenError, match="unknown generation option"):
        GenerateOptions(sampling={"temprature": 1})
    assert GenerateOptions(sampling={"temperature": 0}).sampling == SamplingParams(temperature=0)


def test_cli_options_and_jsonl_keys_come_from_the_schema():
    import typer.main

    from gptgen import cli

    command = typer.main.get_command(cli.app)
    options = {p.name: p for p in command.commands["generate"].params}
    for f in SamplingParams.fields():
        assert list(options[f.name].opts + options[f.name].secondary_opts) == list(f.metadata["flags"]), f.name
        # The schema's text, then (where one applies when unset) the default.
        assert options[f.name].help.startswith(f.metadata["help"]), f.name
    chat = [p.name for p in command.commands["chat"].params]
    assert [n for n in chat if n in SamplingParams.names()] == ["temperature", "top_k", "top_p", "seed"]
    sampling_keys = [f.name for f in SamplingParams.fields() if f.metadata["jsonl"]]
    assert list(cli.JSONL_OPTIONS) == ["max_tokens", *sampling_keys, "stop", "ignore_eos", "lookup"]
    assert cli.JSONL_OPTIONS["temperature"] is float and cli.JSONL_OPTIONS["top_k"] is int and "logit_bias" not in cli.JSONL_OPTIONS
    # The Python API's keyword arguments: GenerateOptions fields and the schema's names.
    options = GenerateOptions.from_kwargs(max_tokens=3, stop=["x"], **{name: None for name in SamplingParams.names()})
    assert (options.max_tokens, options.stop, options.sampling) == (3, ["x"], SamplingParams())


@pytest.fixture(scope="module")
def tiny_llama():
    import gptgen

    return gptgen.load(str(TINY_LLAMA), threads=2)


def test_chat_session_replies_equal_fresh_generations_of_the_conversation(tiny_llama):
    session = tiny_llama.chat_session(system="Be brief.", max_tokens=6, temperature=0, ignore_eos=True)
    first = "".join(session.reply("hello"))
    second = "".join(session.reply("and again"))
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert [session.messages[2]["content"], session.messages[4]["content"]] == [first, second]
    # The second turn reused the first's KV cache; a fresh run of the whole conversation agrees.
    fresh = tiny_llama.chat(session.messages[:4], max_tokens=6, temperature=0, ignore_eos=True)
    assert second == fresh.text and session.timings.decode_tokens == 5


def test_chat_session_refuses_a_message_longer_than_the_context(tiny_llama):
    session = tiny_llama.chat_session(max_tokens=2, temperature=0)
    with pytest.raises(GptgenError, match="does not fit the context"):
        list(session.reply("word " * 300))


def test_a_conversation_past_the_context_drops_its_oldest_turns(tiny_llama):
    """The tiny model's context is 256 tokens: turns of ~60 tokens soon outgrow it; the oldest
    messages go (the system message stays), a notice says so, and the reply is the one a fresh
    run of the shifted conversation gives."""
    notices = []
    session = tiny_llama.chat_session(system="Be brief.", max_tokens=4, temperature=0, ignore_eos=True)
    session.notice = notices.append
    for turn in range(6):
        reply = "".join(session.reply(f"turn {turn}: " + "a b c " * 10))
    assert notices and "oldest messages were dropped" in notices[0]
    assert session.messages[0] == {"role": "system", "content": "Be brief."} and len(session.messages) < 13
    fresh = tiny_llama.chat(session.messages[:-1], max_tokens=4, temperature=0, ignore_eos=True)
    assert reply == fresh.text


def test_an_interrupted_reply_stays_in_the_conversation_marked(tiny_llama):
    session = tiny_llama.chat_session(max_tokens=20, temperature=0, ignore_eos=True)
    pieces = session.reply("hello")
    first = next(pieces)
    pieces.close()  # what Ctrl-C during the reply does to the reader
    assert session.messages[-1] == {"role": "assistant", "content": first, "interrupted": True}