"""The server's continuous-batching scheduler on its own (no HTTP), on the known models: prompts
chunked among decoding sequences, past the engine's 512-row passes, with shared prefixes taken
from the slots' caches, give every sequence exactly the tokens `generate` gives it alone."""

from __future__ import annotations

import threading

import pytest
from conftest import FIXTURES

import gptgen
from gptgen.generate import generate
from gptgen.models import resolve
from gptgen.options import GenerateOptions
from gptgen.server.scheduler import Failure, Finished, Scheduler, Sequence
from gptgen.session import request_for


def _run_all(scheduler: Scheduler, model, requests) -> list[tuple[list[int], str, int]]:
    """Submits every request at once; (tokens, finish reason, cached prompt tokens) of each."""
    done = threading.Semaphore(0)
    tokens: list[list[int]] = [[] for _ in requests]
    finished: list[Finished | None] = [None] * len(requests)

    def deliver_to(i: int):
        def deliver(item) -> None:
            if isinstance(item, (Finished, Failure)):
                finished[i] = item
                done.release()
            elif hasattr(item, "token"):
                tokens[i].append(item.token)

        return deliver

    scheduler.submit([Sequence(model, r, deliver_to(i), n_ctx=scheduler.n_ctx) for i, r in enumerate(requests)])
    for _ in requests:
        assert done.acquire(timeout=300)
    failures = [f.message for f in finished if isinstance(f, Failure)]
    assert not failures, failures
    return [(t, f.finish_reason, f.cached_tokens) for t, f in zip(tokens, finished)]


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma-3-270m"])
def test_batched_chunked_and_reused_prompts_decode_as_generate_alone(name):
    model = gptgen.load(str(resolve(name)), threads=2)
    text = (FIXTURES / "texts" / "apache-2.0.txt").read_text()
    system = "You are a careful assistant. " + text[:1200]
    prompts = [
        model.tokenize("Once upon a time"),
        model.tokenize(text[:2600])[:600],  # crosses the engine's 512-row passes
        model.tokenize(system + " Question: what is licensed?"),
        model.tokenize(system + " Question: may I sell copies?"),  # shares a long prefix with the one before
        model.tokenize(text[3000:3500]),
    ]
    options = [GenerateOptions(max_tokens=10, ignore_eos=True).with_changes(temperature=0), GenerateOptions(max_tokens=10).with_changes(temperature=0.9, seed=5)]
    requests = [request_for(model, p, options[i % 2]) for i, p in enumerate(prompts)]
    alone = [generate(model, r) for r in requests]
    # Four slots for five sequences, prompts chunked 64 tokens a step among the decoding rows.
    scheduler = Scheduler(model, parallel=4, max_queue=8, n_ctx=1024, prefill_chunk=64)
    scheduler.start()
    try:
        first = _run_all(scheduler, model, requests)
        # Again, one at a time: each now finds the prefix it shares with what ran before.
        again = [_run_all(scheduler, model, [r])[0] for r in requests]
    finally:
        scheduler.stop()
    for i, result in enumerate(alone):
        assert first[i][:2] == (result.tokens, result.finish_reason), i
        assert again[i][:2] == (result.tokens, result.finish_reason), i
    # The repeated prompts took their prefixes from the slots (all but the tail a fresh run
    # sums otherwise); the shared system prompt at least.
    assert again[3][2] >= len(prompts[3]) - 8 and again[3][2] > 200
