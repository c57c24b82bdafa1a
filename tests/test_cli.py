"""The command line through its installed entry point, as users run it."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_GPT2, run_cli, with_stderr_on_a_terminal

MODEL = ["-m", str(TINY_GPT2)]


def test_generate_json_matches_transformers_greedy(tiny_gpt2_expected):
    expected, _ = tiny_gpt2_expected
    p = expected["prompts"][0]
    out = run_cli("generate", p["prompt"], *MODEL, "-n", "24", "-t", "0", "--ignore-eos", "--json", "--logprobs", "3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"text", "prompt_tokens", "tokens", "finish_reason", "logprobs", "timings"}
    assert result["prompt_tokens"] == p["ids"]
    assert result["tokens"] == p["greedy24"]
    assert result["finish_reason"] == "length"
    assert set(result["timings"]) == {"prefill_s", "decode_s", "prefill_tok_s", "decode_tok_s"}
    assert len(result["logprobs"]) == 24
    for entry, token in zip(result["logprobs"], p["greedy24"]):
        assert entry["token"] == token
        assert len(entry["top"]) == 3
        # Greedy picks the most likely token: it heads the top list with the same logprob.
        assert entry["top"][0][0] == token and entry["top"][0][1] == pytest.approx(entry["logprob"])
        assert entry["top"][0][1] >= entry["top"][1][1] >= entry["top"][2][1]
    assert out.stderr == b""


def test_hello_example_from_the_issue():
    out = run_cli("generate", "Hello", *MODEL, "-n", "8", "--json", "-t", "0")
    result = json.loads(out.stdout)
    assert result["prompt_tokens"] == [15496] and len(result["tokens"]) == 8


def test_stdin_prompt_equals_argument_prompt():
    args = [*MODEL, "-n", "12", "-t", "0", "--ignore-eos"]
    from_arg = run_cli("generate", "Once upon a time", *args)
    from_stdin = run_cli("generate", *args, input=b"Once upon a time\n")
    from_dash = run_cli("generate", "-", *args, input=b"Once upon a time")
    assert from_arg.returncode == from_stdin.returncode == from_dash.returncode == 0
    assert from_arg.stdout and from_arg.stdout == from_stdin.stdout == from_dash.stdout


def test_streamed_text_equals_json_text():
    args = ["The quick brown fox", *MODEL, "-n", "20", "-t", "1.0", "--seed", "3", "--ignore-eos"]
    streamed = run_cli("generate", *args)
    as_json = json.loads(run_cli("generate", *args, "--json").stdout)
    # The text, then one newline (piped output ends a line, as a terminal's does).
    assert streamed.stdout.decode("utf-8") == as_json["text"] + "\n"


def test_an_empty_prompt_from_stdin_needs_allow_empty():
    refused = run_cli("generate", *MODEL, "-n", "4", "-t", "0", input=b"")
    assert refused.returncode == 1 and refused.stdout == b""
    assert refused.stderr.decode().strip().splitlines() == ["error: the prompt from stdin is empty (give --allow-empty to start from the BOS token alone)"]
    allowed = run_cli("generate", *MODEL, "-n", "4", "-t", "0", "--ignore-eos", "--allow-empty", "--json", input=b"")
    assert allowed.returncode == 0 and len(json.loads(allowed.stdout)["tokens"]) == 4


def test_seed_makes_sampling_reproducible():
    args = ["generate", "Hi", *MODEL, "-n", "16", "-t", "1.5", "--top-k", "0", "--seed", "11", "--ignore-eos", "--json"]
    first, second = (json.loads(run_cli(*args).stdout)["tokens"] for _ in range(2))
    assert first == second
    other = json.loads(run_cli(*args[:-3], "12", "--ignore-eos", "--json").stdout)["tokens"]
    assert other != first  # a different seed draws differently (16 near-uniform draws)


def test_temp_is_llama_cpps_spelling_of_temperature():
    args = ["generate", "Hi", *MODEL, "-n", "16", "--top-k", "0", "--seed", "11", "--ignore-eos", "--json"]

    def tokens(*extra: str) -> list[int]:
        return json.loads(run_cli(*args, *extra).stdout)["tokens"]

    sampled = tokens("--temp", "1.5")
    assert sampled == tokens("--temperature", "1.5")
    assert sampled != tokens("--temp", "0")  # drawn at 1.5, not greedy


def test_default_sampling_follows_generation_config():
    """tiny-gpt2's generation_config.json has no do_sample: transformers decodes greedily, so do we."""
    args = ["generate", "Hello", *MODEL, "-n", "8", "--json"]
    assert json.loads(run_cli(*args).stdout)["tokens"] == json.loads(run_cli(*args, "-t", "0").stdout)["tokens"]


def test_verbose_timings_go_to_stderr_only():
    out = run_cli("generate", "Hi", *MODEL, "-n", "4", "-t", "0", "--verbose")
    assert out.returncode == 0
    assert b"tok/s" in out.stderr and b"tok/s" not in out.stdout


def test_tokenize_prints_a_json_list(tiny_gpt2_expected):
    expected, _ = tiny_gpt2_expected
    p = expected["prompts"][2]
    out = run_cli("tokenize", p["prompt"], *MODEL)
    assert json.loads(out.stdout) == p["ids"]
    out = run_cli("tokenize", "-", *MODEL, input=p["prompt"].encode())
    assert json.loads(out.stdout) == p["ids"]


def test_info_describes_the_model():
    out = run_cli("info", *MODEL)
    assert out.returncode == 0
    text = out.stdout.decode()
    assert "gpt2" in text and "1,637,792" in text and "f32" in text


def _assert_one_line_error(out, fragment: str, status: int = 1):
    """One `error:` line naming `fragment`, nothing on stdout, exit `status` (2: a usage error)."""
    assert out.returncode == status, (out.stdout, out.stderr)
    err = out.stderr.decode()
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert fragment in err, err
    assert out.stdout == b""


def test_missing_model_path(tmp_path):
    _assert_one_line_error(run_cli("generate", "hi", "-m", str(tmp_path / "nope")), "not a file or directory")
    _assert_one_line_error(run_cli("generate", "hi", "-m", "no-such-model"), "known model")


def test_directory_that_is_not_a_checkpoint(tmp_path):
    _assert_one_line_error(run_cli("generate", "hi", "-m", str(tmp_path)), "not a supported checkpoint")


def test_gptgen_model_sets_the_default():
    out = run_cli("generate", "Hello", "-n", "3", "-t", "0", "--json", env={"GPTGEN_MODEL": str(TINY_GPT2)})
    assert out.returncode == 0 and json.loads(out.stdout)["prompt_tokens"] == [15496]


def test_config_weights_mismatch(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in TINY_GPT2.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["n_embd"] = 64
    (broken / "config.json").write_text(json.dumps(config))
    _assert_one_line_error(run_cli("generate", "hi", "-m", str(broken)), "shape")
    config["n_embd"], config["n_layer"] = 32, 1
    (broken / "config.json").write_text(json.dumps(config))
    _assert_one_line_error(run_cli("generate", "hi", "-m", str(broken)), "n_layer")
    config["n_layer"] = "two"
    (broken / "config.json").write_text(json.dumps(config))
    _assert_one_line_error(run_cli("generate", "hi", "-m", str(broken)), "positive integer")


def test_prompt_longer_than_the_context():
    _assert_one_line_error(run_cli("generate", "word " * 200, *MODEL), "context")


def test_max_tokens_beyond_the_context():
    _assert_one_line_error(run_cli("generate", "Hello", *MODEL, "-n", "500"), "context")


def test_bad_sampling_values():
    _assert_one_line_error(run_cli("generate", "Hello", *MODEL, "--top-p", "1.5"), "top-p", 2)
    _assert_one_line_error(run_cli("generate", "Hello", *MODEL, "-t", "-1"), "temperature", 2)
    for value, fragment in (("nan", "temperature"), ("inf", "temperature")):
        _assert_one_line_error(run_cli("generate", "Hello", *MODEL, "-t", value), fragment, 2)
    _assert_one_line_error(run_cli("generate", "Hello", *MODEL, "--top-p", "0"), "top-p", 2)
    _assert_one_line_error(run_cli("generate", "Hello", *MODEL, "--seed", "-2"), "seed", 2)
    # llama.cpp's --seed -1: a random seed, like no seed at all.
    random_seed = run_cli("generate", "Hello", *MODEL, "--seed", "-1", "-n", "3", "--ignore-eos", "--json")
    assert random_seed.returncode == 0 and len(json.loads(random_seed.stdout)["tokens"]) == 3


def test_usage_errors_are_one_line_and_exit_2():
    """click's (unknown option or command, malformed number) and gptgen's own (values out of
    range, options that exclude each other) alike."""
    usage = (
        ["generate", "Hello", "--tempature", "1"], ["generate", "Hello", "-n", "many"], ["no-such-command"],
        ["generate", "Hello", "--top-k", "-3"], ["generate", "Hello", "--threads", "9999"], ["generate", "Hello", "-n", "3", "--max-length", "4"],
        ["generate", "Hello", "--logit-bias", "x"], ["bench", "--batch", "0"],
    )
    for args in usage:
        out = run_cli(*args)
        err = out.stderr.decode()
        assert out.returncode == 2, args
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_version_names_the_package_version_kernels_and_python():
    import importlib.metadata
    import platform

    from gptgen import _native

    want = f"gptgen {importlib.metadata.version('gptgen')} (engine kernels: {_native.kernel_name()}; Python {platform.python_version()})\n"
    for flag in ("--version", "-V"):
        out = run_cli(flag)
        assert (out.returncode, out.stdout.decode(), out.stderr) == (0, want, b"")


def test_help_groups_the_options_and_describes_every_one():
    wide = {"COLUMNS": "200"}
    text = run_cli("generate", "--help", env=wide).stdout.decode()
    headings = [line.split("─ ")[1].split(" ─")[0] for line in text.splitlines() if line.startswith("╭─ ")]
    assert headings == ["Arguments", "Options", "Model", "Length", "Sampling", "Penalties", "Batch", "Output", "Prompt", "Speed"]
    rows = [line for line in text.splitlines() if line.startswith("│ --")]
    # Flags carry no value label; every default reads "Default: ..." in the text.
    assert not [r for r in rows if "<bool>" in r and "--help" not in r]
    assert "[default:" not in text and "Default: 40." in text
    chat = run_cli("chat", "--help", env=wide).stdout.decode()
    rows = [line.strip("│ ").split() for line in chat.splitlines() if line.startswith("│ --")]
    # Each option row has words beyond its flags and value label.
    assert rows and all([w for w in row if not w.startswith(("-", "<", "[")) and not w.endswith((">", "]"))] for row in rows)


def test_a_long_prompt_shows_its_progress_on_a_terminal_and_changes_nothing():
    """A prompt of over two passes (512 tokens each) on SmolLM2: a progress bar on a terminal's
    stderr, none with --quiet or when stderr is piped, and the same text every way."""
    from conftest import FIXTURES

    from gptgen.models import resolve

    prompt = (FIXTURES / "texts" / "apache-2.0.txt").read_text()[:5000]
    args = ["generate", prompt, "-m", str(resolve("smollm2-135m-instruct")), "-n", "8", "-t", "0", "--ignore-eos"]
    text, shown, status = with_stderr_on_a_terminal(args)
    import re

    # The bar, at last at every token of the prompt (done/total, equal).
    assert status == 0 and b"prompt" in shown and re.search(rb"(?<![0-9])([0-9]{3,})/\1(?![0-9])", shown), shown
    quiet_text, quiet_shown, _ = with_stderr_on_a_terminal([*args, "--quiet"])
    assert b"prompt" not in quiet_shown, quiet_shown
    piped = run_cli(*args)
    assert piped.returncode == 0 and piped.stderr == b""
    assert text == quiet_text == piped.stdout and len(text) > 1


def test_generate_says_it_reads_a_terminal_and_takes_the_typed_prompt(tmp_path):
    from conftest import Terminal

    term = Terminal(["generate", *MODEL, "-n", "3", "-t", "0", "--ignore-eos", "--json"], str(tmp_path))
    term.expect(b"gptgen: reading the prompt from stdin (Ctrl-D to end)")
    term.send(b"Hello\n\x04")  # a line, then Ctrl-D at the start of the next: end of input
    assert term.wait() == 0
    record = json.loads(next(line for line in term.seen.splitlines() if line.startswith(b"{")))
    assert len(record["tokens"]) == 3 and record["prompt_tokens"] == json.loads(run_cli("tokenize", *MODEL, "Hello").stdout)
