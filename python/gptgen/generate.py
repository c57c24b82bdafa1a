"""The generation loop: prefill the prompt, then sample and step one token at a time,
yielding each token with its text piece and log-probabilities as it is produced."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .errors import GptgenError
from .model import Model
from .sampling import Sampler, SamplingParams, log_softmax

DEFAULT_MAX_TOKENS = 128


@dataclass
class GenerationRequest:
    prompt_tokens: list[int]
    # None: DEFAULT_MAX_TOKENS, or what the context has room for if that is less.
    max_tokens: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    ignore_eos: bool = False
    # How many alternatives to report per token in `logprobs`.
    top_logprobs: int = 0


@dataclass
class TokenEvent:
    token: int
    text: str
    logprob: float
    # [(token id, logprob)] of the `top_logprobs` most likely tokens, best first.
    top: list[tuple[int, float]]


@dataclass
class Timings:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prefill_tokens: int = 0
    decode_tokens: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "prefill_tok_s": self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0,
            "decode_tok_s": self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0,
        }


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: list[int]
    tokens: list[int]
    finish_reason: str  # "stop" (end of sequence) or "length"
    logprobs: list[TokenEvent]
    timings: Timings

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "finish_reason": self.finish_reason,
            "logprobs": [
                {"token": e.token, "logprob": e.logprob, "top": [[i, lp] for i, lp in e.top]} for e in self.logprobs
            ],
            "timings": self.timings.as_dict(),
        }


def plan_max_tokens(model: Model, n_prompt: int, max_tokens: int | None) -> int:
    """How many tokens to generate, or a clear error when the context cannot hold them."""
    if n_prompt == 0:
        raise GptgenError("the prompt is empty and the model has no BOS token to start from")
    room = model.n_ctx - n_prompt
    if room <= 0:
        raise GptgenError(f"the prompt is {n_prompt} tokens; the model's context holds {model.n_ctx}")
    if max_tokens is None:
        return min(DEFAULT_MAX_TOKENS, room)
    if max_tokens < 0:
        raise GptgenError(f"--max-tokens must be >= 0, not {max_tokens}")
    if max_tokens > room:
        raise GptgenError(
            f"the prompt ({n_prompt} tokens) plus {max_tokens} new tokens exceed the model's context of "
            f"{model.n_ctx}; ask for at most {room}"
        )
    return max_tokens


class Conversation:
    """A session kept across generations (chat turns): tokens already in its KV cache are not
    computed again when the next prompt starts with them."""

    def __init__(self, model: Model):
        self.model = model
        self.session = model.new_session(model.n_ctx)
        # The tokens whose keys and values the session holds, in order.
        self.cached: list[int] = []

    def prefill(self, prompt: list[int]) -> np.ndarray:
        """Logits after `prompt`, reusing the longest cached prefix."""
        common = 0
        for a, b in zip(self.cached, prompt):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # the last prompt token must run to give logits
        self.session.rewind(common)
        logits = self.session.forward(prompt[common:])[0]
        self.cached = list(prompt)
        return logits

    def step(self, token: int) -> np.ndarray:
        logits = self.session.forward([token])[0]
        self.cached.append(token)
        return logits


class Generation:
    """One run of `request` on `model`: iterate for TokenEvents; afterwards `finish_reason`
    and `timings` describe the run. A `conversation` carries the KV cache across runs."""

    def __init__(self, model: Model, request: GenerationRequest, conversation: Conversation | None = None):
        self.model = model
        self.request = request
        self.conversation = conversation
        self.max_tokens = plan_max_tokens(model, len(request.prompt_tokens), request.max_tokens)
        self.sampler = Sampler(request.sampling)
        self.timings = Timings()
        self.finish_reason = "length"
        self.tokens: list[int] = []
        self._stream = model.tokenizer.stream()
        self._stop_ids = set() if request.ignore_eos else set(model.tokenizer.eos_ids)

    def __iter__(self) -> Iterator[TokenEvent]:
        if self.max_tokens == 0:
            return
        prompt = self.request.prompt_tokens
        start = time.perf_counter()
        if self.conversation is None:
            session = self.model.new_session(len(prompt) + self.max_tokens)
            logits = session.forward(prompt)[0]
            step = lambda token: session.forward([token])[0]  # noqa: E731
        else:
            logits = self.conversation.prefill(prompt)
            step = self.conversation.step
        self.timings.prefill_s = time.perf_counter() - start
        self.timings.prefill_tokens = len(prompt)

        decode_start = time.perf_counter()
        while True:
            token = self.sampler(logits)
            self.tokens.append(token)
            if token in self._stop_ids:
                self.finish_reason = "stop"
            yield self._event(token, logits)
            if self.finish_reason == "stop" or len(self.tokens) >= self.max_tokens:
                break
            logits = step(token)
            self.timings.decode_tokens += 1
            self.timings.decode_s = time.perf_counter() - decode_start

    def final_text(self) -> str:
        """Text still held back after the last token: an unfinished UTF-8 character, as U+FFFD."""
        return self._stream.finish()

    def _event(self, token: int, logits: np.ndarray) -> TokenEvent:
        logprobs = log_softmax(logits)
        k = min(self.request.top_logprobs, logprobs.size)
        top: list[tuple[int, float]] = []
        if k > 0:
            best = np.argpartition(-logprobs, k - 1)[:k]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            top = [(int(i), float(logprobs[i])) for i in best]
        return TokenEvent(token=token, text=self._stream.push(token), logprob=float(logprobs[token]), top=top)


def generate(model: Model, request: GenerationRequest) -> GenerationResult:
    """Runs a whole generation and collects it."""
    run = Generation(model, request)
    events = list(run)
    return GenerationResult(
        text="".join(e.text for e in events) + run.final_text(),
        prompt_tokens=list(request.prompt_tokens),
        tokens=run.tokens,
        finish_reason=run.finish_reason,
        logprobs=events,
        timings=run.timings,
    )
