"""Load on `gptgen serve` and on llama.cpp's servers (llama-cpp-python's `llama_cpp.server`,
and optionally llama.cpp's own `llama-server` with continuous batching), on the same GGUF file
and thread count, in ONE run: the servers one after another, each through every number of
concurrent clients, each client streaming completions one after another.

    python benches/serve_load.py --llama-python /tmp/llama/bin/python --llama-server /path/to/llama-server

Each request: a ~100-token prompt (each client's own), `max_tokens` new tokens with the end of
sequence banned by logit_bias (so every reply is as long on both servers), temperature 0,
streamed. Reported per server and concurrency: aggregate tokens/s (completion tokens of all
requests / wall time from the first request to the last reply), time to first token p50/p99,
the time between tokens p50/p99 (each stream's chunk gaps), requests answered, and how many of
them came back whole (all `max_tokens` tokens).

llama.cpp's server runs in its own virtual environment (`pip install 'llama-cpp-python[server]'`),
never in gptgen's dependencies. The load generator shares the machine with the server: on 2
cores it takes CPU from both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx

from gptgen.models import resolve

# With a client's header, 100 tokens of the default model's tokenizer.
PROMPT = (
    "The history of the lighthouse begins in the ancient world, where fires were lit on hilltops to guide ships "
    "into harbour. The most famous of these was the Pharos of Alexandria, built in the third century BC, which stood "
    "for more than a thousand years. Keepers once lived in small cottages beside the tower and trimmed the wicks "
    "every night. Modern lighthouses use lenses and electric lamps, and many are now automated. "
    "Write a short story about a lighthouse keeper who"
)


@dataclass
class Sample:
    first_token_s: float
    gaps_s: list[float]
    tokens: int


@dataclass
class Level:
    server: str
    clients: int
    wall_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    refused: int = 0
    max_tokens: int = 0

    def row(self) -> dict:
        tokens = sum(s.tokens for s in self.samples)
        firsts = [s.first_token_s for s in self.samples]
        gaps = [g for s in self.samples for g in s.gaps_s]
        return {
            "server": self.server,
            "clients": self.clients,
            "requests": len(self.samples),
            "refused": self.refused,
            "whole": sum(s.tokens == self.max_tokens for s in self.samples),
            "tokens_per_s": tokens / self.wall_s if self.wall_s else 0.0,
            "ttft_p50_s": _percentile(firsts, 50),
            "ttft_p99_s": _percentile(firsts, 99),
            "token_gap_p50_s": _percentile(gaps, 50),
            "token_gap_p99_s": _percentile(gaps, 99),
        }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started by `command`, ready once GET `health` answers 200."""

    def __init__(self, name: str, command: list[str], url: str, health: str):
        self.name, self.url = name, url
        self.log: list[str] = []
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start:\n" + "\n".join(self.log[-20:]))
            try:
                if httpx.get(f"{url}{health}", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _one_request(client: httpx.AsyncClient, url: str, body: dict, level: Level) -> None:
    start = time.perf_counter()
    times: list[float] = []
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code == 429:
            level.refused += 1
            await response.aread()
            return
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                times.append(time.perf_counter())
    if times:
        level.samples.append(Sample(times[0] - start, [b - a for a, b in zip(times, times[1:])], len(times)))


async def _drive(url: str, level: Level, requests_per_client: int, max_tokens: int, eos_id: int, tag: str = "") -> None:
    async def client_loop(client: httpx.AsyncClient, c: int) -> None:
        for r in range(requests_per_client):
            body = {
                "model": "m",
                "prompt": f"Client {c}, request {r}{tag}. {PROMPT}",
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "logit_bias": {str(eos_id): -100},
            }
            await _one_request(client, url, body, level)

    # A connection per request: llama-server closes idle keep-alive connections, and a request
    # sent on one as it closes fails.
    limits = httpx.Limits(max_connections=level.clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client, c) for c in range(level.clients)))
        level.wall_s = time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="A .gguf file or known name (default: the default model).")
    ap.add_argument("--llama-python", default=None, help="Python of a venv with llama-cpp-python[server] (its llama_cpp.server).")
    ap.add_argument("--llama-server", default=None, help="llama.cpp's own llama-server binary (continuous batching), as a third server.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,4,8,16", help="Concurrent clients per level (comma-separated).")
    ap.add_argument("--requests", type=int, default=3, help="Requests each client sends, one after another.")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ctx-size", type=int, default=1024, help="Tokens per sequence (gptgen) and per slot.")
    ap.add_argument("--json", action="store_true", help="Print the rows as JSON lines too.")
    args = ap.parse_args()

    path = resolve(args.model)
    clients = [int(c) for c in args.clients.split(",")]
    from gptgen.model import load_files

    _, tokenizer = load_files(path)
    eos_id = tokenizer.eos_ids[0]
    n_prompt = len(tokenizer.encode(f"Client 0, request 0. {PROMPT}"))
    print(f"# {path.name}, {args.threads} threads, {args.requests} requests per client of {n_prompt} prompt tokens "
          f"and {args.max_tokens} new tokens; CPU: {_cpu()}\n")
    servers = []
    port = _free_port()
    gptgen_cmd = [sys.executable, "-m", "gptgen.cli", "serve", "-m", str(path), "--port", str(port), "--threads", str(args.threads),
                  "--parallel", str(max(clients)), "--ctx-size", str(args.ctx_size)]
    servers.append(("gptgen", gptgen_cmd, f"http://127.0.0.1:{port}", "/health"))
    if args.llama_python:
        port = _free_port()
        llama_cmd = [args.llama_python, "-m", "llama_cpp.server", "--model", str(path), "--port", str(port), "--host", "127.0.0.1",
                     "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", str(args.ctx_size),
                     # By default it ends a running stream early whenever another request waits:
                     # serve each reply whole instead, one after another.
                     "--interrupt_requests", "False"]
        servers.append(("llama.cpp", llama_cmd, f"http://127.0.0.1:{port}", "/v1/models"))

    if args.llama_server:
        port = _free_port()
        slots = max(clients)
        server_cmd = [args.llama_server, "-m", str(path), "--port", str(port), "--host", "127.0.0.1", "-t", str(args.threads),
                      "-tb", str(args.threads), "--parallel", str(slots), "-c", str(args.ctx_size * slots), "--no-webui"]
        servers.append(("llama-server", server_cmd, f"http://127.0.0.1:{port}", "/health"))

    print("| server | clients | requests (whole) | tokens/s | TTFT p50 | TTFT p99 | token gap p50 | token gap p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, command, url, health in servers:
        server = ServerProcess(name, command, url, health)
        try:
            # One request first: warm caches and lazily built tables on both sides.
            asyncio.run(_drive(url, Level(name, 1), 1, 8, eos_id, tag="warm-up"))
            for n in clients:
                level = Level(name, n, max_tokens=args.max_tokens)
                try:
                    asyncio.run(_drive(url, level, args.requests, args.max_tokens, eos_id))
                except httpx.HTTPError as e:
                    print(f"| {name} | {n} | failed: {e!r}; the server's last words: {' / '.join(server.log[-3:])} |", flush=True)
                    break
                row = level.row()
                rows.append(row)
                print(f"| {name} | {n} | {row['requests']} ({row['whole']}) | {row['tokens_per_s']:.1f} | {row['ttft_p50_s']:.3f} s | {row['ttft_p99_s']:.3f} s | "
                      f"{row['token_gap_p50_s'] * 1000:.1f} ms | {row['token_gap_p99_s'] * 1000:.1f} ms |", flush=True)
        finally:
            server.stop()
    by = {(r["server"], r["clients"]): r for r in rows}
    print()
    for n in clients:
        ours = by.get(("gptgen", n))
        single = by.get(("gptgen", 1))
        parts = []
        for peer_name in ("llama.cpp", "llama-server"):
            peer = by.get((peer_name, n))
            if ours and peer:
                parts.append(f"gptgen / {peer_name} {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x")
        if ours and single:
            parts.append(f"gptgen x{n} / gptgen x1 {ours['tokens_per_s'] / single['tokens_per_s']:.2f}x")
        print(f"{n} clients: " + ", ".join(parts))
    if args.json:
        for r in rows:
            print(json.dumps(r))


def _cpu() -> str:
    try:
        text = open("/proc/cpuinfo").read()
        return re.search(r"model name\s*:\s*(.*)", text).group(1) + f", {os.cpu_count()} CPUs"
    except (OSError, AttributeError):
        return "unknown"


if __name__ == "__main__":
    main()
