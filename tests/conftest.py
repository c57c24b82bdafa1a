from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
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


class Terminal:
    """gptgen ARGS on a pseudo-terminal of its own, stdin, stdout and stderr (its controlling
    terminal, so that Ctrl-C there is SIGINT as at a real one), with GPTGEN_HOME `home`."""

    def __init__(self, args: list[str], home: str):
        env = {**os.environ, "GPTGEN_HOME": home, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "120", "LINES": "40"}
        command = [*gptgen_command(), *args]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become gptgen
            os.execve(command[0], command, env)
        self.seen = b""

    def expect(self, text: bytes, timeout: float = 60) -> bytes:
        """Reads until `text` has been shown; returns what was shown up to and including it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not shown; the terminal shows {self.seen[-2000:]!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the terminal closed
                    assert text in self.seen, f"{text!r} not shown before exit; {self.seen[-2000:]!r}"
        shown, _, self.seen = self.seen.partition(text)
        return shown + text

    def send(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def prompt(self) -> bytes:
        """Waits for the next prompt of `gptgen chat` (prompt_toolkit turns bracketed paste on
        as it draws one); returns what was shown before it."""
        return self.expect(b"\x1b[?2004h")

    def line(self, text: str) -> bytes:
        """Types `text` and Enter at the prompt; returns what was shown until the next prompt."""
        self.send(text.encode() + b"\r")
        return self.prompt()

    def wait(self) -> int:
        """The exit status, once the process ends; what the terminal shows until then is added
        to `seen`."""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)
