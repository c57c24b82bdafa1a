"""From what a caller gives to what the generation loop runs: a prompt (text, or chat messages)
and GenerateOptions become a GenerationRequest on a model (chat template rendered, text
tokenized, lengths worked out, the model's sampling defaults beneath the caller's); and
`ChatSession`, a conversation held one reply at a time with its KV cache kept between turns."""

from __future__ import annotations

from typing import Callable, Iterator, Union

from .chat import messages_for, render
from .errors import GptgenError
from .generate import Conversation, Generation, GenerationRequest, TextRun, Timings
from .model import Model
from .options import GenerateOptions

# Text, or chat messages [{"role", "content"}].
Prompt = Union[str, list[dict[str, str]]]


def render_messages(model: Model, messages: list[dict[str, str]]) -> str:
    """The prompt text for `messages` under the model's chat template."""
    return render(model.spec.chat_template, messages, **model.special_strings())


def prompt_text(model: Model, prompt: Prompt, options: GenerateOptions) -> str:
    """The text to tokenize: messages rendered with the chat template, text as it is (or as a
    user message, after options.system, when options.chat)."""
    if isinstance(prompt, list):
        return render_messages(model, prompt)
    if options.chat:
        return render_messages(model, messages_for(prompt, options.system))
    return prompt


def prompt_tokens(model: Model, text: str) -> list[int]:
    """`text` as token ids; an empty text starts from BOS, as in GPT-2's unconditional samples."""
    ids = model.tokenizer.encode(text)
    if not ids and model.tokenizer.bos_id is not None:
        ids = [model.tokenizer.bos_id]
    return ids


def request_for(model: Model, ids: list[int], options: GenerateOptions, max_tokens: int | None = None) -> GenerationRequest:
    """The request for prompt `ids`: new tokens `max_tokens` if given, else as the options say."""
    if max_tokens is None:
        max_tokens = options.max_tokens
        if options.max_length is not None:
            if options.max_tokens is not None:
                raise GptgenError("give max_tokens or max_length, not both")
            max_tokens = options.max_length - len(ids)
            if max_tokens < 0:
                raise GptgenError(f"max_length {options.max_length} is shorter than the prompt ({len(ids)} tokens)")
    return GenerationRequest(
        prompt_tokens=ids,
        max_tokens=max_tokens,
        sampling=options.sampling.over(model.spec.sampling_defaults),
        ignore_eos=options.ignore_eos,
        top_logprobs=options.top_logprobs,
        stop=list(options.stop),
        truncate=options.truncate,
        lookup=options.lookup,
    )


def build_request(model: Model, prompt: Prompt, options: GenerateOptions) -> GenerationRequest:
    """The request for `prompt` on `model`."""
    return request_for(model, prompt_tokens(model, prompt_text(model, prompt, options)), options)


class ChatSession:
    """A conversation with `model`, one reply at a time: the messages so far (after
    options.system), rendered with the model's chat template for each turn; the tokens of
    earlier turns stay in the KV cache and are not computed again. Each reply has at most
    options.max_tokens new tokens (default: as in generate) and what the context has room for.
    A conversation that outgrows the context loses its oldest turns (the system message stays),
    and `notice` hears of it; a reply cut short (Ctrl-C) stays in the conversation, marked
    `"interrupted": true`."""

    # Tokens a reply must have room for before the oldest turns are dropped to make room.
    MIN_REPLY_ROOM = 16

    def __init__(self, model: Model, options: GenerateOptions | None = None, notice: Callable[[str], None] = lambda _: None):
        self.model = model
        self.options = options or GenerateOptions()
        self.notice = notice
        system = self.options.system
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self.conversation = Conversation(model)
        self.run: TextRun | None = None  # the latest reply's

    def reset(self) -> None:
        """A new conversation: the system message alone."""
        self.messages = [m for m in self.messages if m["role"] == "system"][:1]

    def set_system(self, content: str) -> None:
        """Replaces the system message (or adds one), keeping the turns."""
        self.messages = [{"role": "system", "content": content}] + [m for m in self.messages if m["role"] != "system"]

    def load(self, messages: object) -> None:
        """Takes `messages` ([{"role", "content"}, ...], as /save writes them) as the conversation."""
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str) for m in messages
        ):
            raise GptgenError('a conversation is a JSON list of {"role": "system" | "user" | "assistant", "content": text}')
        self.messages = [dict(m) for m in messages]

    def reply(self, content: str) -> Iterator[str]:
        """Adds the user message `content` and yields the reply's text in pieces as it is
        generated; the reply joins the messages once it has been read to the end, or, marked
        interrupted, when reading it stops early."""
        self.messages.append({"role": "user", "content": content})
        ids = self._fitted_prompt()
        room = self.model.n_ctx - len(ids)
        wanted = self.options.max_tokens
        request = request_for(self.model, ids, self.options, max_tokens=None if wanted is None else min(wanted, room))
        self.run = TextRun(Generation(self.model, request, self.conversation))
        pieces: list[str] = []
        try:
            for piece in self.run.pieces():
                pieces.append(piece)
                yield piece
        except BaseException:  # Ctrl-C, or the reader closing the generator
            self.messages.append({"role": "assistant", "content": "".join(pieces), "interrupted": True})
            raise
        self.messages.append({"role": "assistant", "content": "".join(pieces)})

    def _fitted_prompt(self) -> list[int]:
        """The conversation's prompt tokens, its oldest turns dropped (the system message and the
        new user message kept) until a reply has room; an error when even that does not fit."""
        n_ctx, dropped = self.model.n_ctx, 0
        while True:
            ids = self.model.tokenizer.encode(render_messages(self.model, self.messages))
            turns = [i for i, m in enumerate(self.messages[:-1]) if m["role"] != "system"]
            if n_ctx - len(ids) >= min(self.MIN_REPLY_ROOM, n_ctx // 2) or not turns:
                break
            # The oldest turn: its user message and what answered it, up to the next user message.
            first = turns[0]
            end = next((i for i in range(first + 1, len(self.messages) - 1) if self.messages[i]["role"] == "user"), len(self.messages) - 1)
            del self.messages[first:end]
            dropped += end - first
        if dropped:
            self.notice(f"the conversation outgrew the context of {n_ctx} tokens: its {dropped} oldest messages were dropped")
        if len(ids) >= n_ctx:
            raise GptgenError(f"the message ({len(ids)} tokens with the system message) does not fit the context of {n_ctx}")
        return ids

    @property
    def timings(self) -> Timings | None:
        """The latest reply's timings."""
        return None if self.run is None else self.run.timings
