from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
TINY_GPT2 = FIXTURES / "tiny-gpt2"


@pytest.fixture(scope="session")
def tiny_gpt2_expected():
    return json.loads((TINY_GPT2 / "expected.json").read_text()), np.load(TINY_GPT2 / "expected.npz")


@pytest.fixture(scope="session")
def tiny_gpt2():
    import gptgen

    return gptgen.load(str(TINY_GPT2), threads=2)


def gptgen_command() -> list[str]:
    """The installed console script, the real entry point users run."""
    script = Path(sys.executable).parent / "gptgen"
    if script.exists():
        return [str(script)]
    found = shutil.which("gptgen")
    assert found, "the gptgen console script is not installed"
    return [found]


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*gptgen_command(), *args],
        input=input if input is not None else b"",
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def with_stderr_on_a_terminal(args: list[str]) -> tuple[bytes, bytes, int]:
    """Runs gptgen with stderr on a pseudo-terminal (stdout piped): (stdout, what the terminal
    showed, exit status)."""
    import pty
    import threading

    master, slave = pty.openpty()
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out = subprocess.run([*gptgen_command(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=300)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return out.stdout, bytes(shown), out.returncode
