"""The CLI with the built-in default model and the commands around models: pull, models, info,
chat, perplexity, and Hugging Face repo ids. Uses the cached SmolLM2 (pulled on first use)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import FIXTURES, run_cli

from gptgen import models
from gptgen.errors import GptgenError

REFERENCE = json.loads((FIXTURES / "smollm2" / "llama.cpp-reference.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def default_model_cached():
    models.resolve(models.DEFAULT_MODEL)


def test_generate_with_no_model_argument_uses_the_default(monkeypatch):
    p = REFERENCE["prompts"][0]
    out = run_cli("generate", p["prompt"], "-n", "8", "-t", "0", "--json", env={"GPTGEN_MODEL": ""})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["prompt_tokens"] == p["ids"]
    assert result["tokens"] == p["greedy48"][:8]


def test_info_shows_quant_types():
    out = run_cli("info", "-m", "smollm2-135m-instruct")
    text = out.stdout.decode()
    assert out.returncode == 0
    assert "q4_1: 210" in text and "q8_0: 1" in text and "llama" in text and "gguf" in text


def test_models_lists_the_cache_and_pull_is_idempotent():
    out = run_cli("models")
    assert b"smollm2-135m-instruct" in out.stdout
    out = run_cli("pull")
    assert out.returncode == 0 and out.stdout.decode().strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert b"already" in out.stderr


def test_pull_of_an_unknown_name_fails_cleanly():
    out = run_cli("pull", "no-such-model")
    assert out.returncode == 1 and out.stderr.decode().startswith("error: unknown model")


def test_a_corrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTGEN_HOME", str(tmp_path))
    bad = dataclasses.replace(models.REGISTRY[models.DEFAULT_MODEL], sha256="0" * 64)
    with pytest.raises(GptgenError, match="does not match its sha256"):
        models.pull(bad)
    assert not models.cached_file(bad).exists()
    assert list((tmp_path / "models").iterdir()) == []  # no partial file, no temporary directory


def test_generate_chat_wraps_the_prompt_in_the_template():
    chat = REFERENCE["chats"][0]
    prompt = chat["messages"][0]["content"]
    out = run_cli("generate", prompt, "--chat", "-n", "4", "-t", "0", "--json")
    assert json.loads(out.stdout)["prompt_tokens"] == chat["ids"]
    out = run_cli("generate", prompt, "--system", "Be brief.", "-n", "4", "-t", "0", "--json")
    ids = json.loads(out.stdout)["prompt_tokens"]
    assert ids != chat["ids"] and ids[:1] == [1]


def test_chat_answers_each_line_and_stops_at_end_of_input():
    out = run_cli("chat", "-n", "24", "-t", "0", input=b"What is the tallest mountain on Earth?\nAnd the second?\n")
    assert out.returncode == 0, out.stderr
    replies = out.stdout.decode().strip().split("\n")
    assert len([r for r in replies if r.strip()]) >= 2
    assert "Everest" in out.stdout.decode()


def test_perplexity_json():
    ref = REFERENCE["perplexity"]["apache-2.0"]
    out = run_cli("perplexity", str(FIXTURES / "texts" / "apache-2.0.txt"), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["chunks"] == ref["chunks"] and result["scored"] == ref["scored"]
    assert abs(result["ppl"] - ref["ppl"]) / ref["ppl"] < 0.01


def test_uncached_hugging_face_repo_offline_is_a_clear_error(tmp_path):
    out = run_cli("generate", "hi", "-m", "openai-community/gpt2", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith("error: cannot get openai-community/gpt2") and err.count("\n") == 1
