"""The server's Prometheus metrics (prometheus-client, one registry per server): requests by
endpoint and status, tokens, the queue and the batch, time to first token and between tokens."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .scheduler import SchedulerMetrics

# Seconds: from a few milliseconds (a token of a small model) to a minute (a long prompt queued).
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics(SchedulerMetrics):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gptgen_requests", "HTTP requests answered, by endpoint and status code.", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("gptgen_prompt_tokens", "Prompt tokens of finished sequences.", registry=r)
        self.cached_prompt_tokens = Counter("gptgen_prompt_tokens_cached", "Prompt tokens whose KV cache was reused, not computed.", registry=r)
        self.generation_tokens = Counter("gptgen_generation_tokens", "Tokens generated.", registry=r)
        self.running = Gauge("gptgen_sequences_running", "Sequences in the running batch.", registry=r)
        self.waiting = Gauge("gptgen_queue_depth", "Sequences waiting for a slot.", registry=r)
        self.batch_rows = Histogram(
            "gptgen_batch_rows", "Rows (tokens) per forward pass.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r
        )
        self.time_to_first_token = Histogram(
            "gptgen_time_to_first_token_seconds", "From a request's arrival to its first token.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.time_per_output_token = Histogram(
            "gptgen_time_per_output_token_seconds", "Between a sequence's consecutive tokens.", buckets=_LATENCY_BUCKETS, registry=r
        )

    def step(self, running: int, waiting: int, rows: int) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.batch_rows.observe(rows)

    def first_token(self, seconds: float) -> None:
        self.time_to_first_token.observe(seconds)
        self.generation_tokens.inc()

    def next_token(self, seconds: float) -> None:
        self.time_per_output_token.observe(seconds)
        self.generation_tokens.inc()

    def prompt_done(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.cached_prompt_tokens.inc(cached_tokens)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
