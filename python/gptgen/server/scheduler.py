"""Continuous batching: one thread owns the engine and advances every admitted sequence
together, one forward pass per step.

A step decodes one token for each sequence past its prompt and runs the next chunk of waiting
prompts (at most `prefill_chunk` prompt tokens a step, first come first served), all as one
`forward_batch`, so the weights are read once for everyone and a long prompt never stalls the
running streams for more than a chunk. Sequences join at the next step and leave when they
finish or are cancelled (a client gone). Each keeps its own sampler, seed and stop strings,
and since a row's logits do not depend on what else is in the pass, a sequence produces the
same tokens alone or in any batch.

Every row is summed exactly as `gptgen generate` sums it: a prompt chunk is run as its rows of
the pass the engine would make of the whole prompt (`within`), and a decoded token alone. So a
sequence's tokens are the same alone, in any batch, and as from `gptgen generate`.

There is one KV-cache session per slot (`parallel` of them). A slot remembers which tokens its
cache holds after its sequence ends, and how each was summed; a new sequence takes the free
slot whose cache holds the longest prefix of its prompt summed as a fresh run of the prompt
would sum it (a shared system prompt, a chat's earlier prompts), and runs only the rest.

Results go back through the `deliver` callable each sequence was given, called on the
scheduler's thread with a TokenEvent, a PromptScores, a Finished or a Failure.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Union

import functools

import numpy as np

from .. import _native
from ..errors import GptgenError
from ..generate import Generation, GenerationRequest, TokenEvent, common_prefix, top_alternatives
from ..model import Model
from ..sampling import log_softmax

# Prompt tokens a step runs at most, across all prompts: a long prompt costs the running streams
# at most a pass of this many rows per token (~0.2 s for the default model on 2 cores), while
# the prompt still runs at nearly full prefill speed.
DEFAULT_PREFILL_CHUNK = 128


class QueueFull(GptgenError):
    """Every slot is busy and the queue is full."""


class ShuttingDown(GptgenError):
    """The scheduler is stopping and takes no new sequences."""


@dataclass
class PromptScores:
    """Log-probabilities of the prompt's tokens (completions' echo with logprobs): for each
    token after the first, (its logprob, the top alternatives [(id, logprob)])."""

    scores: list[tuple[float, list[tuple[int, float]]]]


@dataclass
class Finished:
    finish_reason: str  # "stop" or "length"
    # Text still held back after the last token (see Generation.final_text).
    tail: str
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens whose KV cache came from an earlier sequence in the slot.
    cached_tokens: int
    # Seconds from submission to the first token, and from it to the last.
    time_to_first_token: float
    decode_seconds: float


@dataclass
class Failure:
    message: str


Delivery = Union[TokenEvent, PromptScores, Finished, Failure]


class SchedulerMetrics:
    """What the scheduler reports as it runs; this one ignores it (metrics.py records it)."""

    def step(self, running: int, waiting: int, rows: int) -> None:
        """After each forward pass: sequences running and waiting, rows in the pass."""

    def first_token(self, seconds: float) -> None:
        """A sequence's first token, `seconds` after it was submitted."""

    def next_token(self, seconds: float) -> None:
        """A later token, `seconds` after the sequence's previous one."""

    def prompt_done(self, prompt_tokens: int, cached_tokens: int) -> None:
        """A prompt has run (`cached_tokens` of it were already in a slot's cache)."""


class Sequence:
    """One choice of one request, from submission to its last token. Made on the caller's
    thread: the request is checked there (a GptgenError for one that cannot run)."""

    def __init__(self, model: Model, request: GenerationRequest, deliver: Callable[[Delivery], None], *, n_ctx: int, prompt_logprobs: int | None = None):
        self.generation = Generation(model, request, n_ctx=n_ctx)
        self.prompt = self.generation.plan.prompt
        self.deliver = deliver
        # With echo and logprobs: the prompt's log-probabilities, with this many alternatives.
        self.prompt_logprobs = prompt_logprobs
        self.cancelled = False
        self.submitted = time.perf_counter()
        # Prompt tokens not yet run, and how many came from a slot's cache.
        self.pending: list[int] = []
        self.cached_tokens = 0
        self.prompt_scores: list[tuple[float, list[tuple[int, float]]]] = []
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    def cancel(self) -> None:
        """Drops the sequence at the next step (its client went away); thread-safe."""
        self.cancelled = True


@functools.lru_cache(maxsize=64)
def fresh_classes(length: int) -> tuple[tuple[bool, bool, bool], ...]:
    """How each position of a prompt of `length` tokens is summed when it runs fresh, in the
    engine's passes of PASS_ROWS from its first token (`_native.row_sum_class`)."""
    classes = []
    for start in range(0, length, _native.PASS_ROWS):
        of = min(_native.PASS_ROWS, length - start)
        classes += [_native.row_sum_class(of, i) for i in range(of)]
    return tuple(classes)


# How a decoded token's row is summed: alone.
DECODED = _native.row_sum_class(1, 0)


@dataclass
class Slot:
    session: object  # a _native.Session of the scheduler's context length
    # The tokens whose keys and values the session holds, in order, and how each was summed.
    cached: list[int] = field(default_factory=list)
    classes: list[tuple[bool, bool, bool]] = field(default_factory=list)
    sequence: Sequence | None = None
    last_used: float = 0.0

    def reusable(self, sequence: "Sequence") -> int:
        """How many leading prompt tokens of `sequence` this slot's cache holds as a fresh run
        would (at most all but the last, which must run to give logits)."""
        if sequence.prompt_logprobs is not None:
            return 0  # scoring the prompt needs every prompt row's logits
        same = min(common_prefix(self.cached, sequence.prompt), common_prefix(self.classes, fresh_classes(len(sequence.prompt))))
        return min(same, len(sequence.prompt) - 1)


class Scheduler:
    """Runs submitted sequences on `model`, at most `parallel` at once; at most `max_queue`
    more wait. Start it with start(); stop() cancels what is left."""

    def __init__(
        self,
        model: Model,
        *,
        parallel: int,
        max_queue: int,
        n_ctx: int,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        metrics: SchedulerMetrics | None = None,
    ):
        self.model = model
        self.parallel = parallel
        self.max_queue = max_queue
        self.n_ctx = n_ctx
        self.prefill_chunk = prefill_chunk
        self.metrics = metrics or SchedulerMetrics()
        self.slots = [Slot(model.new_session(n_ctx)) for _ in range(parallel)]
        self.waiting: deque[Sequence] = deque()
        # Guards `waiting`, the slots' `sequence` and `stopping`; wakes the idle loop.
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="gptgen-scheduler", daemon=True)

    @property
    def capacity(self) -> int:
        """The most sequences held at once, running or waiting."""
        return self.parallel + self.max_queue

    def start(self) -> None:
        self._thread.start()

    def submit(self, sequences: list[Sequence]) -> None:
        """Queues every sequence of one request, or none (QueueFull, ShuttingDown)."""
        with self._lock:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            held = len(self.waiting) + sum(slot.sequence is not None for slot in self.slots)
            if held + len(sequences) > self.capacity:
                raise QueueFull(f"the server is busy: {self.parallel} sequences running and {len(self.waiting)} waiting")
            self.waiting.extend(sequences)
            self._lock.notify()

    def load(self) -> tuple[int, int]:
        """(sequences running, sequences waiting)."""
        with self._lock:
            return sum(slot.sequence is not None for slot in self.slots), len(self.waiting)

    def stop(self, timeout: float = 5.0) -> None:
        """Refuses new sequences, fails those still waiting or running, and ends the thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the scheduler's thread ----

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self.waiting and not self._running():
                    self._lock.wait()
                if self._stopping:
                    self._fail_all("the server is shutting down")
                    return
                self._admit()
            try:
                self._step()
            except Exception as e:  # an engine error: the sequences in the pass cannot go on
                self._fail_running(f"generation failed: {e}")

    def _running(self) -> list[Sequence]:
        return [slot.sequence for slot in self.slots if slot.sequence is not None]

    def _admit(self) -> None:
        """Moves waiting sequences into free slots, each to the one whose cache shares the
        longest prefix with its prompt (the least recently used among equals)."""
        while self.waiting:
            free = [slot for slot in self.slots if slot.sequence is None]
            if not free:
                return
            sequence = self.waiting.popleft()
            if sequence.cancelled:
                continue
            slot = max(free, key=lambda s: (s.reusable(sequence), -s.last_used))
            slot.session.rewind(slot.reusable(sequence))
            # A sliding window's ring may no longer hold that prefix: the session says where it is.
            keep = slot.session.pos
            del slot.cached[keep:]
            del slot.classes[keep:]
            sequence.pending = sequence.prompt[keep:]
            sequence.cached_tokens = keep
            slot.sequence = sequence

    def _step(self) -> None:
        """One forward pass: a token for each decoding sequence, then prompt chunks."""
        for slot in self.slots:
            if slot.sequence is not None and slot.sequence.cancelled:
                self._release(slot)
        # (slot, tokens, (of, first): the pass they are summed as part of, their classes)
        work: list[tuple[Slot, list[int], tuple[int, int], list]] = []
        budget = self.prefill_chunk
        for slot in self.slots:
            sequence = slot.sequence
            if sequence is not None and not sequence.pending:
                work.append((slot, [sequence.generation.tokens[-1]], (1, 0), [DECODED]))
        for slot in sorted((s for s in self.slots if s.sequence is not None and s.sequence.pending), key=lambda s: s.sequence.submitted):
            if budget <= 0:
                break
            # A chunk stays within one of the passes the engine makes of the whole prompt.
            prompt, start = slot.sequence.prompt, len(slot.sequence.prompt) - len(slot.sequence.pending)
            pass_start = start // _native.PASS_ROWS * _native.PASS_ROWS
            pass_end = min(pass_start + _native.PASS_ROWS, len(prompt))
            end = min(start + budget, pass_end)
            budget -= end - start
            work.append((slot, prompt[start:end], (pass_end - pass_start, start - pass_start), list(fresh_classes(len(prompt))[start:end])))
        if not work:
            return
        all_logits = any(slot.sequence.pending and slot.sequence.prompt_logprobs is not None for slot, *_ in work)
        logits = self.model.engine.forward_batch(
            [slot.session for slot, *_ in work], [tokens for _, tokens, *_ in work], all_logits, within=[within for _, _, within, _ in work]
        )
        now = time.perf_counter()
        row = 0
        for slot, tokens, _, classes in work:
            rows = logits[row : row + len(tokens)] if all_logits else logits[row : row + 1]
            row += rows.shape[0]
            slot.cached.extend(tokens)
            slot.classes.extend(classes)
            self._advance(slot, tokens, rows, now)
        running, waiting = self.load()
        self.metrics.step(running, waiting, sum(len(tokens) for _, tokens, *_ in work))

    def _advance(self, slot: Slot, tokens: list[int], rows: np.ndarray, now: float) -> None:
        """Takes a pass's logits for the slot's sequence: the rows of a prompt chunk (all of
        them when scoring the prompt, else the last), or the row of its latest token."""
        sequence = slot.sequence
        generation = sequence.generation
        if sequence.pending:
            if sequence.prompt_logprobs is not None:
                self._score_prompt(sequence, tokens, rows)
            sequence.pending = sequence.pending[len(tokens) :]
            if sequence.pending:
                return
            self.metrics.prompt_done(len(sequence.prompt), sequence.cached_tokens)
            if sequence.prompt_logprobs is not None:
                sequence.deliver(PromptScores(sequence.prompt_scores))
            if generation.plan.max_tokens == 0:
                self._finish(slot, now)
                return
        event = generation.accept(rows[-1])
        if sequence.first_token_at is None:
            sequence.first_token_at = now
            self.metrics.first_token(now - sequence.submitted)
        else:
            self.metrics.next_token(now - sequence.last_token_at)
        sequence.last_token_at = now
        sequence.deliver(event)
        if generation.done:
            self._finish(slot, now)

    def _score_prompt(self, sequence: Sequence, tokens: list[int], rows: np.ndarray) -> None:
        """Each chunk row's logits score the prompt token after it."""
        start = len(sequence.prompt) - len(sequence.pending)
        k = sequence.prompt_logprobs or 0
        for i in range(len(tokens)):
            position = start + i + 1
            if position >= len(sequence.prompt):
                break
            logprobs = log_softmax(rows[i])
            sequence.prompt_scores.append((float(logprobs[sequence.prompt[position]]), top_alternatives(logprobs, k)))

    def _finish(self, slot: Slot, now: float) -> None:
        sequence = slot.sequence
        generation = sequence.generation
        first = sequence.first_token_at or now
        finished = Finished(
            finish_reason=generation.finish_reason,
            tail=generation.final_text(),
            prompt_tokens=len(sequence.prompt),
            completion_tokens=len(generation.tokens),
            cached_tokens=sequence.cached_tokens,
            time_to_first_token=first - sequence.submitted,
            decode_seconds=now - first,
        )
        self._release(slot)
        sequence.deliver(finished)

    def _release(self, slot: Slot) -> None:
        with self._lock:
            slot.sequence = None
            slot.last_used = time.perf_counter()

    def _fail_running(self, message: str) -> None:
        """Fails every running sequence; their sessions start over (their state is unknown)."""
        for slot in self.slots:
            if slot.sequence is not None:
                sequence = slot.sequence
                slot.session.rewind(0)
                slot.cached.clear()
                slot.classes.clear()
                self._release(slot)
                sequence.deliver(Failure(message))

    def _fail_all(self, message: str) -> None:
        """Called with the lock held."""
        for slot in self.slots:
            if slot.sequence is not None:
                slot.sequence.deliver(Failure(message))
                slot.sequence = None
        while self.waiting:
            self.waiting.popleft().deliver(Failure(message))

