"""Malformed model files end in one `error:` line and exit status 1: never a traceback, a
crash, a hang or a huge allocation. The files come from the generators in malformed.py."""

from __future__ import annotations

import pytest

from conftest import TINY_GPT2, run_cli
from malformed import checkpoint_cases, gguf_cases


def _assert_clean_failure(out, name):
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 1, f"{name}: exit {out.returncode}, stderr {err[-500:]}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"{name}: {err[-500:]}"
    assert "Traceback" not in err and out.stdout == b""


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory):
    return gguf_cases(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_cases(tmp_path_factory.mktemp("ckpt"), TINY_GPT2)


@pytest.mark.parametrize(
    "name",
    ["bad magic", "wrong version", "truncated header", "truncated metadata", "truncated tensor data", "huge tensor count", "huge kv count", "empty file", "string length past the end",
     "NaN in a norm", "missing tensor", "shape disagrees", "unexpected tensor"],
)
def test_malformed_gguf(gguf_files, name):
    _assert_clean_failure(run_cli("generate", "hi", "-m", str(gguf_files[name]), "-n", "1", timeout=60), name)


@pytest.mark.parametrize(
    "name",
    ["negative n_embd", "string n_layer", "zero heads", "huge vocab", "config not json", "config is a list", "truncated weights", "weights header garbage", "tokenizer garbage", "index points outside", "pickle weights"],
)
def test_malformed_checkpoint(checkpoints, name):
    _assert_clean_failure(run_cli("generate", "hi", "-m", str(checkpoints[name]), "-n", "1", timeout=60), name)
