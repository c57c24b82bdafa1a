"""From what a caller gives to what the generation loop runs: a prompt (text, or chat messages)
and GenerateOptions become a GenerationRequest on a model (chat template rendered, text
tokenized, lengths worked out, the model's sampling defaults beneath the caller's); and
`ChatSession`, a conversation held one reply at a time with its KV cache kept between turns."""

from __future__ import annotations

from typing import Iterator, Union

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
    )


def build_request(model: Model, prompt: Prompt, options: GenerateOptions) -> GenerationRequest:
    """The request for `prompt` on `model`."""
    return request_for(model, prompt_tokens(model, prompt_text(model, prompt, options)), options)


class ChatSession:
    """A conversation with `model`, one reply at a time: the messages so far (after
    options.system), rendered with the model's chat template for each turn; the tokens of
    earlier turns stay in the KV cache and are not computed again. Each reply has at most
    options.max_tokens new tokens (default: as in generate) and what the context has room for."""

    def __init__(self, model: Model, options: GenerateOptions | None = None):
        self.model = model
        self.options = options or GenerateOptions()
        system = self.options.system
        self.messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        self.conversation = Conversation(model)
        self.run: TextRun | None = None  # the latest reply's

    def reply(self, content: str) -> Iterator[str]:
        """Adds the user message `content` and yields the reply's text in pieces as it is
        generated; the reply joins the messages once it has been read to the end."""
        self.messages.append({"role": "user", "content": content})
        ids = self.model.tokenizer.encode(render_messages(self.model, self.messages))
        n_ctx = self.model.n_ctx
        room = n_ctx - len(ids)
        if room <= 0:
            raise GptgenError(f"the conversation ({len(ids)} tokens) no longer fits the context of {n_ctx}")
        wanted = self.options.max_tokens
        request = request_for(self.model, ids, self.options, max_tokens=None if wanted is None else min(wanted, room))
        self.run = TextRun(Generation(self.model, request, self.conversation))
        pieces = []
        for piece in self.run.pieces():
            pieces.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(pieces)})

    @property
    def timings(self) -> Timings | None:
        """The latest reply's timings."""
        return None if self.run is None else self.run.timings
