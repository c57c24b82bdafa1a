"""The generation loop over a Model: prefill the prompt, then sample and step one token at a
time, yielding each token with its text piece and log-probabilities as it is produced. Its
input is a GenerationRequest (token ids, lengths, sampling; session.py builds one from text or
chat messages); `generate` and `generate_batch` collect GenerationResults, `TextRun` reads a
run as text pieces, and a `Conversation` keeps the KV cache across runs (chat turns)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .errors import GptgenError
from .model import Model
from .options import SamplingParams
from .lookup import DraftLength, lookup_draft
from .sampling import Sampler, log_softmax, token_logprob

DEFAULT_MAX_TOKENS = 128


@dataclass
class GenerationRequest:
    prompt_tokens: list[int]
    # None: DEFAULT_MAX_TOKENS, or what the context has room for if that is less.
    max_tokens: int | None = None
    # Unset parameters take llama.cpp's defaults (session.py puts the model's own beneath).
    sampling: SamplingParams = field(default_factory=SamplingParams)
    ignore_eos: bool = False
    # How many alternatives to report per token in `logprobs`.
    top_logprobs: int = 0
    # Generation ends when the text contains one of these; the stop string is not output.
    stop: list[str] = field(default_factory=list)
    # When prompt + max_tokens exceed the context: keep the prompt's last tokens instead of failing.
    truncate: bool = False
    # Prompt lookup: verify up to this many tokens copied from earlier in the sequence per pass
    # (0: off). The tokens are the ones decoding without it gives (see Sampler.verify).
    lookup: int = 0


@dataclass
class TokenEvent:
    token: int
    # Text this token releases: may be empty (an unfinished character, a possible stop string).
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
    # Prompt lookup: draft tokens checked, and how many of them the model agreed with.
    drafted: int = 0
    accepted: int = 0

    def as_dict(self) -> dict[str, float]:
        times = {
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "prefill_tok_s": self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0,
            "decode_tok_s": self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0,
        }
        if self.drafted:
            times.update(drafted=self.drafted, accepted=self.accepted)
        return times


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: list[int]
    tokens: list[int]
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    logprobs: list[TokenEvent]
    timings: Timings

    def __str__(self) -> str:
        return self.text

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


@dataclass
class Plan:
    prompt: list[int]
    max_tokens: int
    # True when the default length was cut short by the end of the context.
    ends_at_context: bool


def plan(model: Model, request: GenerationRequest, n_ctx: int | None = None) -> Plan:
    """The prompt to run and how many tokens to generate; a clear error, before any work, when
    the context (`n_ctx`, default the model's) cannot hold them (unless the request allows
    truncating the prompt)."""
    prompt, n_ctx = list(request.prompt_tokens), n_ctx or model.n_ctx
    if not prompt:
        raise GptgenError("the prompt is empty and the model has no BOS token to start from")
    wanted = DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
    if wanted < 0:
        raise GptgenError(f"--max-tokens must be >= 0, not {wanted}")
    if len(prompt) + max(wanted, 1) > n_ctx:
        if request.truncate:
            prompt = prompt[len(prompt) - max(n_ctx - wanted, 1) :]
        elif request.max_tokens is None and len(prompt) < n_ctx:
            return Plan(prompt, n_ctx - len(prompt), ends_at_context=True)
        elif len(prompt) >= n_ctx:
            raise GptgenError(f"the prompt is {len(prompt)} tokens; the model's context holds {n_ctx} (use --truncate to keep its end)")
        else:
            raise GptgenError(
                f"the prompt ({len(prompt)} tokens) plus {wanted} new tokens exceed the model's context of {n_ctx}; "
                f"ask for at most {n_ctx - len(prompt)} or use --truncate"
            )
    return Plan(prompt, min(wanted, n_ctx - len(prompt)), ends_at_context=False)


class StopFilter:
    """Releases text as soon as it cannot be the start of a stop string; reports a stop string
    as soon as the text contains one, and never releases it."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to output, whether a stop string was reached)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        held = max((k for s in self.stops for k in range(1, min(len(s), len(self.pending) + 1)) if self.pending.endswith(s[:k])), default=0)
        out, self.pending = self.pending[: len(self.pending) - held], self.pending[len(self.pending) - held :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# Told (tokens done, tokens in all) after each pass of a long prompt.
Progress = Callable[[int, int], None]


def run_prompt(session, tokens: list[int], progress: Progress | None = None) -> np.ndarray:
    """The logits after `tokens` (the last row), run at the session's next positions. With
    `progress`, a prompt longer than one pass runs one engine pass (PASS_ROWS tokens) per call,
    the passes the engine would make of it alone, so the logits are the same, and `progress`
    hears of each."""
    from . import _native

    step = _native.PASS_ROWS
    if progress is None or len(tokens) <= step:
        return session.forward(tokens)[0]
    for start in range(0, len(tokens), step):
        logits = session.forward(tokens[start : start + step])
        progress(min(start + step, len(tokens)), len(tokens))
    return logits[0]


def top_alternatives(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """[(token id, logprob)] of the k most likely tokens, best first."""
    if k <= 0:
        return []
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return [(int(i), float(logprobs[i])) for i in best]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from the start."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Conversation:
    """A session kept across generations (chat turns): tokens already in its KV cache are not
    computed again when the next prompt starts with them. `max_seq`: its positions (default:
    the model's context)."""

    def __init__(self, model: Model, max_seq: int | None = None):
        self.model = model
        self.session = model.new_session(max_seq or model.n_ctx)
        # The tokens whose keys and values the session holds, in order.
        self.cached: list[int] = []

    def prefill(self, prompt: list[int], progress: Progress | None = None) -> np.ndarray:
        """Logits after `prompt`, reusing the longest cached prefix (`progress`: see run_prompt)."""
        common = min(common_prefix(self.cached, prompt), len(prompt) - 1)  # the last prompt token must run to give logits
        self.rewind(common)
        # A sliding window's ring may no longer hold what that prefix needs: the session says
        # where it stands.
        logits = run_prompt(self.session, prompt[self.session.pos :], progress)
        self.cached = list(prompt)
        return logits

    def rewind(self, pos: int) -> None:
        """Forgets the tokens from position `pos` on (see Session.rewind)."""
        self.session.rewind(pos)
        del self.cached[self.session.pos :]


class Generation:
    """One run of `request` on `model`: iterate for TokenEvents; afterwards `finish_reason`,
    `timings` and `ends_at_context` describe the run. A `conversation` carries the KV cache
    across runs; `progress` hears of a long prompt's passes; `n_ctx` bounds the run where it is
    less than the model's context (a server's per-request context).

    The loop in passes: `prefill()` gives the first token's logits; then each pass runs the
    tokens `feed()` gives (the latest token, and with `request.lookup` a draft copied from
    earlier in the sequence) and `take(rows)` turns the pass's logits into tokens. Several
    generations can so share one batched pass (generate_batch)."""

    def __init__(
        self,
        model: Model,
        request: GenerationRequest,
        conversation: Conversation | None = None,
        progress: Progress | None = None,
        n_ctx: int | None = None,
    ):
        self.model = model
        self.request = request
        self.conversation = conversation
        # Told of the prompt's passes (run_prompt) when it is long.
        self.progress = progress
        self.plan = plan(model, request, n_ctx)
        self.sampler = Sampler(request.sampling)
        self.timings = Timings()
        self.finish_reason = "length"
        self.tokens: list[int] = []
        self._stream = model.tokenizer.stream()
        self._stops = StopFilter(request.stop)
        self._stopped_by_string = False
        self.done = False
        # Prompt and generated tokens, grown in place (the penalties and n-gram rule read it).
        self._sequence = list(self.plan.prompt)
        self._stop_ids = set() if request.ignore_eos else set(model.tokenizer.eos_ids)
        # The tokens of the pass in flight: the latest token, then the draft.
        self._fed: list[int] = []
        self._draft_length = DraftLength(request.lookup)
        # Seconds the pass in flight took, when it ran alone (not in a batch).
        self._pass_seconds: float | None = None

    @property
    def prompt_tokens(self) -> list[int]:
        return self.plan.prompt

    @property
    def ends_at_context(self) -> bool:
        return self.plan.ends_at_context and self.finish_reason == "length"

    @property
    def session(self):
        return self.conversation.session

    def __iter__(self) -> Iterator[TokenEvent]:
        rows = self.prefill()
        decode_start = time.perf_counter()
        while rows is not None:
            yield from self.take(rows)
            if self.done:
                return
            fed = self.feed()
            start = time.perf_counter()
            # Stepwise: a draft's rows get the logits decoding them one at a time would give.
            rows = self.session.forward(fed, all_logits=len(fed) > 1, stepwise=True)
            self._pass_seconds = time.perf_counter() - start
            self.timings.decode_s = time.perf_counter() - decode_start

    def prefill(self) -> np.ndarray | None:
        """Runs the prompt; returns the logits [1, n_vocab] for the first token (None: nothing
        to generate)."""
        prompt, max_tokens = self.plan.prompt, self.plan.max_tokens
        if max_tokens == 0:
            self.done = True
            return None
        start = time.perf_counter()
        if self.conversation is None:
            # Room for the run, and for a draft's rows past its last token.
            self.conversation = Conversation(self.model, len(prompt) + max_tokens + self.request.lookup)
        logits = self.conversation.prefill(prompt, self.progress)
        self.timings.prefill_s = time.perf_counter() - start
        self.timings.prefill_tokens = len(prompt)
        return logits[None]

    def feed(self) -> list[int]:
        """The tokens of the next pass: the latest token, then (prompt lookup) up to
        request.lookup tokens that followed the sequence's last n-gram where it last occurred,
        as many as have been paying off (lookup.DraftLength)."""
        session = self.session
        room = min(self.plan.max_tokens - len(self.tokens), session.max_seq - session.pos) - 1
        wanted = min(self._draft_length.choose(), room) if self.request.lookup else 0
        draft = lookup_draft(self._sequence, wanted) if wanted > 0 else []
        self._fed = [self.tokens[-1], *draft]
        self._pass_seconds = None
        return self._fed

    def take(self, rows: np.ndarray) -> list[TokenEvent]:
        """The tokens a pass gives: rows[i] is the logits after fed token i. Each draft token
        is checked against the model's choice (Sampler.verify) and the first one replaced ends
        the pass's tokens; the KV cache forgets the draft tokens after it."""
        draft = self._fed[1:]
        self.conversation.cached.extend(self._fed)
        events: list[TokenEvent] = []
        for i, row in enumerate(rows):
            events.append(self.accept(row, draft[i] if i < len(draft) else None))
            if self.done or i >= len(draft) or events[-1].token != draft[i]:
                break
        accepted = common_prefix([e.token for e in events], draft)
        if self._fed:
            self._draft_length.observe(len(draft), accepted, len(self._fed), self._pass_seconds)
        self.timings.drafted += len(draft)
        self.timings.accepted += accepted
        self.conversation.rewind(self.session.pos - (len(draft) - accepted))
        if self._fed:
            self.timings.decode_tokens += len(events)
        return events

    def accept(self, logits: np.ndarray, draft: int | None = None) -> TokenEvent:
        """Samples the next token from `logits` (given a draft's proposal, by Sampler.verify)
        and records it; sets `done` when it ends the run."""
        token = self.sampler(logits, self._sequence) if draft is None else self.sampler.verify(logits, self._sequence, draft)
        self.tokens.append(token)
        self._sequence.append(token)
        text, self._stopped_by_string = self._stops.push(self._stream.push(token))
        if self._stopped_by_string or token in self._stop_ids:
            self.finish_reason = "stop"
        self.done = self.finish_reason == "stop" or len(self.tokens) >= self.plan.max_tokens
        return self._event(token, logits, text)

    def final_text(self) -> str:
        """Text still held back after the last token (an unfinished UTF-8 character, as U+FFFD,
        or the start of a stop string that never completed); empty after a stop string."""
        if self._stopped_by_string:
            return ""
        text, stopped = self._stops.push(self._stream.finish())
        return text if stopped else text + self._stops.flush()

    def _event(self, token: int, logits: np.ndarray, text: str) -> TokenEvent:
        k = min(self.request.top_logprobs, logits.size)
        if k == 0:
            return TokenEvent(token=token, text=text, logprob=token_logprob(logits, token), top=[])
        logprobs = log_softmax(logits)
        return TokenEvent(token=token, text=text, logprob=float(logprobs[token]), top=top_alternatives(logprobs, k))


class TextRun:
    """A generation in progress, read as text pieces: `pieces()` yields exactly the final text,
    split as it becomes safe to show."""

    def __init__(self, generation: Generation):
        self.generation = generation

    def pieces(self) -> Iterator[str]:
        for event in self.generation:
            if event.text:
                yield event.text
        tail = self.generation.final_text()
        if tail:
            yield tail

    @property
    def timings(self) -> Timings:
        return self.generation.timings

    @property
    def ends_at_context(self) -> bool:
        return self.generation.ends_at_context


def generate(model: Model, request: GenerationRequest) -> GenerationResult:
    """Runs a whole generation and collects it."""
    run = Generation(model, request)
    return _result(run, list(run))


def generate_batch(model: Model, requests: list[GenerationRequest]) -> Iterator[tuple[int, GenerationResult]]:
    """Runs several requests together: each prompt is prefilled on its own, then every pass
    runs what each unfinished generation feeds (its latest token, and any lookup draft) in one
    forward pass (the weights are read once per pass for all of them). Yields (index, result)
    as each finishes; tokens are the same as from separate runs."""
    runs = [Generation(model, r) for r in requests]
    events: list[list[TokenEvent]] = [[] for _ in runs]
    rows: dict[int, np.ndarray] = {}
    for i, run in enumerate(runs):
        first = run.prefill()
        if first is None:
            yield i, _result(run, events[i])
        else:
            rows[i] = first
    decode_start = time.perf_counter()
    while rows:
        for i, logits in rows.items():
            events[i].extend(runs[i].take(logits))
        for i in [i for i in rows if runs[i].done]:
            del rows[i]
            yield i, _result(runs[i], events[i])
        if not rows:
            break
        active = list(rows)
        fed = [runs[i].feed() for i in active]
        wide = any(len(tokens) > 1 for tokens in fed)
        out = model.engine.forward_batch([runs[i].session for i in active], fed, wide, stepwise=True)
        elapsed = time.perf_counter() - decode_start
        start = 0
        for i, tokens in zip(active, fed):
            count = len(tokens) if wide else 1
            rows[i] = out[start : start + count]
            start += count
            runs[i].timings.decode_s = elapsed


def _result(run: Generation, events: list[TokenEvent]) -> GenerationResult:
    return GenerationResult(
        text="".join(e.text for e in events) + run.final_text(),
        prompt_tokens=run.prompt_tokens,
        tokens=run.tokens,
        finish_reason=run.finish_reason,
        logprobs=events,
        timings=run.timings,
    )
