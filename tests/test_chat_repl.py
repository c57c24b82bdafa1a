"""`gptgen chat` at a terminal, driven through a pseudo-terminal as a person would type: the
banner, /help, replies, Ctrl-C at the prompt and during a reply, a bracketed paste and a
\"\"\" block as one message each, /save, /load, /set, Ctrl-D, and the history kept between
runs."""

from __future__ import annotations

import json
import time

from conftest import FIXTURES, Terminal

TINY_LLAMA = FIXTURES / "tiny-llama"


def test_a_chat_at_a_terminal(tmp_path):
    saved = tmp_path / "chat.json"
    term = Terminal(["chat", "-m", str(TINY_LLAMA), "-n", "4", "-t", "0", "--system", "Be brief."], str(tmp_path / "home"))
    term.expect(b"/help for commands, Ctrl-D to quit.")
    term.prompt()
    assert b"/set NAME VALUE" in term.line("/help")
    term.line("hello")
    term.send(b"\x03")  # Ctrl-C at the prompt: a hint, not the end
    term.expect(b"Ctrl-D or /exit ends the chat")
    term.prompt()
    term.line("\x1b[200~pasted one\npasted two\x1b[201~")  # a bracketed paste: one message
    term.line('"""')  # a block: one message of two lines
    term.line("line one")
    term.line('line two"""')
    assert b"error: temperature must be a number >= 0" in term.line("/set temperature -1")
    assert b"(top_k = 5)" in term.line("/set top_k 5")
    assert b"unknown command /nonsense" in term.line("/nonsense")
    assert b"(saved 7 messages" in term.line(f"/save {saved}")
    term.send(b"\x04")  # Ctrl-D
    assert term.wait() == 0
    messages = json.loads(saved.read_text())
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "Be brief." and messages[1]["content"] == "hello"
    assert [messages[3]["content"], messages[5]["content"]] == ["pasted one\npasted two", "line one\nline two"]
    # The history is kept between runs: the next chat finds what was typed.
    assert "hello" in (tmp_path / "home" / "chat-history").read_text()
    again = Terminal(["chat", "-m", str(TINY_LLAMA), "-n", "4", "-t", "0"], str(tmp_path / "home"))
    again.expect(b"Ctrl-D to quit.")
    again.prompt()
    assert b"(loaded 7 messages" in again.line(f"/load {saved}")
    again.send(b"/exit\r")
    assert again.wait() == 0


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(tmp_path):
    from gptgen.models import resolve

    saved = tmp_path / "chat.json"
    # SmolLM2 writing up to 2,000 tokens: seconds, time enough to interrupt it.
    term = Terminal(["chat", "-m", str(resolve("smollm2-135m-instruct")), "-n", "2000", "-t", "0.8", "--seed", "1"], str(tmp_path / "home"))
    term.expect(b"Ctrl-D to quit.")
    term.prompt()
    term.send(b"Write a very long story about a dragon.\r")
    term.expect(b"dragon.")  # the echo of the message
    time.sleep(1.0)  # the reply under way
    term.send(b"\x03")
    term.expect(b"[reply interrupted")
    term.prompt()
    assert b"(saved 2 messages" in term.line(f"/save {saved}")
    term.send(b"/exit\r")
    assert term.wait() == 0
    reply = json.loads(saved.read_text())[-1]
    assert reply["role"] == "assistant" and reply["interrupted"] is True and reply["content"]
