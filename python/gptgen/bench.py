"""Throughput benchmarks with llama-bench's definitions (tools/llama-bench): ppN times one
prefill of N random tokens, tgN times N single-token decode steps from an empty cache; a
warm-up run first, a fresh KV cache for every repetition, mean and sample stddev of tokens/s.
"@ dD" (llama-bench's -d) runs the test after D random tokens, prefilled into the fresh cache
untimed. tgN with a batch of B sequences reports aggregate tokens/s (B * N / time)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .model import Model


@dataclass
class BenchResult:
    test: str  # "pp512", "tg128", "tg128 x8", "tg128 @ d4096"
    threads: int
    n_prompt: int
    n_gen: int
    batch: int
    n_depth: int = 0
    samples_ts: list[float] = field(default_factory=list)

    @property
    def avg_ts(self) -> float:
        return statistics.mean(self.samples_ts)

    @property
    def stddev_ts(self) -> float:
        return statistics.stdev(self.samples_ts) if len(self.samples_ts) > 1 else 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "avg_ts": self.avg_ts, "stddev_ts": self.stddev_ts}


def cpu_info() -> dict:
    """The CPU's model name and the SIMD flags that matter here."""
    model, flags = platform.processor() or "unknown", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("unknown", "", "x86_64"):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "neon")
    return {"model": model, "flags": [f for f in wanted if f in flags]}


def _session_at(model: Model, depth: Sequence[int], room: int):
    """A fresh session with `depth` already prefilled and room for `room` more tokens."""
    session = model.new_session(len(depth) + room)
    if depth:
        session.forward(list(depth))
    return session


def time_prefill(model: Model, tokens: list[int], depth: Sequence[int] = ()) -> float:
    """Seconds to prefill `tokens` into a fresh session holding `depth` (prefilled untimed)."""
    session = _session_at(model, depth, len(tokens))
    start = time.perf_counter()
    session.forward(tokens)
    return time.perf_counter() - start


def time_decode(model: Model, steps: list[list[int]], depth: Sequence[int] = ()) -> float:
    """Seconds to decode steps[i], the token of each sequence at step i (batch =
    len(steps[0])), each sequence a fresh session holding `depth` (prefilled untimed)."""
    batch = len(steps[0])
    sessions = [_session_at(model, depth, len(steps)) for _ in range(batch)]
    start = time.perf_counter()
    for step in steps:
        if batch == 1:
            sessions[0].forward(step)
        else:
            model.engine.forward_batch(sessions, [[t] for t in step])
    return time.perf_counter() - start


def run(model: Model, *, n_prompt: int, n_gen: int, batches: list[int], repetitions: int, n_depth: int = 0, seed: int = 0) -> list[BenchResult]:
    """pp{n_prompt} and tg{n_gen} (per batch size) on `model` at its thread count, each after
    n_depth tokens in the cache."""
    rng = np.random.default_rng(seed)
    vocab = model.spec.config.n_vocab
    threads = model.engine.threads
    at_depth = f" @ d{n_depth}" if n_depth > 0 else ""
    results = []
    if n_prompt > 0:
        result = BenchResult(f"pp{n_prompt}{at_depth}", threads, n_prompt, 0, 1, n_depth)
        tokens = rng.integers(0, vocab, size=n_prompt).tolist()
        depth = rng.integers(0, vocab, size=n_depth).tolist()
        time_prefill(model, tokens, depth)  # warm-up
        for _ in range(repetitions):
            result.samples_ts.append(n_prompt / time_prefill(model, tokens, depth))
        results.append(result)
    for batch in batches if n_gen > 0 else []:
        name = f"tg{n_gen}" + (f" x{batch}" if batch > 1 else "") + at_depth
        result = BenchResult(name, threads, 0, n_gen, batch, n_depth)
        steps = rng.integers(0, vocab, size=(n_gen, batch)).tolist()
        depth = rng.integers(0, vocab, size=n_depth).tolist()
        time_decode(model, steps[:2], depth)  # warm-up
        for _ in range(repetitions):
            result.samples_ts.append(batch * n_gen / time_decode(model, steps, depth))
        results.append(result)
    return results
