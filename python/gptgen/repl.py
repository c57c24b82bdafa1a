"""`gptgen chat`'s loop: messages in, replies out, and the slash commands between them. At a
terminal the messages come from prompt_toolkit (line editing, a history kept in the cache, a
bracketed paste as one message, `\"\"\"` blocks as in `ollama run`; Ctrl-C at the prompt says how
to quit); otherwise one message per line of stdin, so that a script can drive it. Ctrl-C during
a reply stops that reply only (it stays in the conversation, marked interrupted)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from .errors import GptgenError
from .options import SamplingParams
from .session import ChatSession

COMMANDS = {
    "/help": "this list",
    "/reset": "a new conversation (the system message kept)",
    "/system TEXT": "set the system message",
    "/save FILE": "write the conversation as JSON messages",
    "/load FILE": "take the conversation from a file /save wrote",
    "/set NAME VALUE": "a sampling option (temperature, top_k, top_p, min_p, seed, ...) or max_tokens",
    "/exit": "end the chat (also Ctrl-D)",
}
# What a block message starts and ends with.
BLOCK = '"""'


def terminal_messages(history: Path, log: Callable[[str], None]) -> Iterator[str]:
    """Messages typed at a terminal, with line editing and `history` kept between runs; a line
    starting with \"\"\" opens a block of lines, one message, that ends at a line ending with it."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession = PromptSession(history=FileHistory(str(history)))
    while True:
        try:
            line = session.prompt("> ")
            if line.lstrip().startswith(BLOCK):
                line = _block(line.lstrip()[len(BLOCK) :], lambda: session.prompt("... "))
        except KeyboardInterrupt:
            log("(Ctrl-D or /exit ends the chat)")
            continue
        except EOFError:
            return
        yield line


def _block(first: str, more: Callable[[], str]) -> str:
    """The text of a \"\"\" block whose opening line continues with `first`; `more` reads a line."""
    lines = [first]
    while not (lines[-1].rstrip().endswith(BLOCK) and (len(lines) > 1 or first.strip() != "")):
        lines.append(more())
    lines[-1] = lines[-1].rstrip()[: -len(BLOCK)]
    return "\n".join(lines).strip("\n")


def piped_messages(lines: Iterator[str]) -> Iterator[str]:
    """One message per line (its newline dropped)."""
    for line in lines:
        yield line.rstrip("\n")


class ChatLoop:
    """Replies to each message through `write` (stdout), notes and errors through `log`
    (stderr); `after_reply` runs after each reply (timings)."""

    def __init__(self, session: ChatSession, write: Callable[[str], None], log: Callable[[str], None], after_reply: Callable[[], None] = lambda: None):
        self.session = session
        self.write = write
        self.log = log
        self.after_reply = after_reply

    def run(self, messages: Iterator[str]) -> None:
        for message in messages:
            if message.startswith("/"):
                if not self.command(message):
                    return
            elif message.strip():
                self.answer(message)

    def answer(self, message: str) -> None:
        reply = self.session.reply(message)
        try:
            for piece in reply:
                self.write(piece)
        except KeyboardInterrupt:
            reply.close()  # the partial reply joins the conversation, marked
            self.write("\n")
            self.log("[reply interrupted; what was said stays in the conversation]")
            return
        self.write("\n")
        self.after_reply()

    def command(self, line: str) -> bool:
        """Runs a slash command; False when it ends the chat. A command that fails says why
        and the chat goes on."""
        name, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        try:
            if name in ("/exit", "/quit"):
                return False
            if name == "/help":
                width = max(len(c) for c in COMMANDS)
                self.log("\n".join(f"  {c.ljust(width)}  {what}" for c, what in COMMANDS.items()))
            elif name == "/reset":
                self.session.reset()
                self.log("(a new conversation)")
            elif name == "/system":
                self.session.set_system(_required(argument, "/system TEXT"))
            elif name == "/save":
                path = Path(_required(argument, "/save FILE")).expanduser()
                path.write_text(json.dumps(self.session.messages, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
                self.log(f"(saved {len(self.session.messages)} messages to {path})")
            elif name == "/load":
                path = Path(_required(argument, "/load FILE")).expanduser()
                try:
                    messages = json.loads(path.read_text(encoding="utf-8"))
                except ValueError as e:
                    raise GptgenError(f"{path} is not JSON: {e}") from None
                self.session.load(messages)
                self.log(f"(loaded {len(self.session.messages)} messages from {path})")
            elif name == "/set":
                self._set(argument)
            else:
                raise GptgenError(f"unknown command {name} (/help lists them)")
        except OSError as e:
            self.log(f"error: {e.strerror or e}: {getattr(e, 'filename', '')}")
        except GptgenError as e:
            self.log(f"error: {e}")
        return True

    def _set(self, argument: str) -> None:
        """/set NAME VALUE: NAME a sampling option (dashes or underscores) or max_tokens."""
        key, _, text = argument.partition(" ")
        key, text = key.replace("-", "_"), text.strip()
        if not key or not text:
            raise GptgenError("usage: /set NAME VALUE")
        if key == "max_tokens":
            value = _number(int, text, key)
            if value < 1:
                raise GptgenError(f"max_tokens must be at least 1, not {value}")
            self.session.options = replace(self.session.options, max_tokens=value)
        elif key in SamplingParams.names() and SamplingParams.value_type(key) in (int, float):
            # SamplingParams checks the value as it is made.
            self.session.options = self.session.options.with_changes(**{key: _number(SamplingParams.value_type(key), text, key)})
        else:
            settable = ", ".join(n for n in sorted(SamplingParams.names()) if SamplingParams.value_type(n) in (int, float))
            raise GptgenError(f"cannot set {key!r} (max_tokens, {settable})")
        self.log(f"({key} = {text})")


def _required(argument: str, usage: str) -> str:
    if not argument:
        raise GptgenError(f"usage: {usage}")
    return argument


def _number(kind: type, text: str, name: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise GptgenError(f"{name} takes {'a whole number' if kind is int else 'a number'}, not {text!r}") from None
