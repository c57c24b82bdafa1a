"""gptgen against llama.cpp (and Hugging Face transformers, where torch is installed) on the
same GGUF file, threads and machine, measured in ONE run with the engines interleaved
(A B A B ...), so that the ratios are fair on a noisy shared machine.

    python benches/compare.py --llama-python /path/to/venv-with-llama-cpp-python/bin/python

See benches/README.md. Prints medians of tokens/s, the ratios gptgen / peer, the machine's
measured memory bandwidth, and the decode ceiling it implies (bandwidth / weight bytes read
per token) with gptgen's fraction of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

import gptgen
from gptgen.bench import cpu_info, time_decode, time_prefill
from gptgen.models import resolve

# Runs in the peer's interpreter: JSON requests on stdin, JSON timings on stdout.
LLAMA_WORKER = r"""
import json, sys, time
from llama_cpp import Llama
path, threads, n_ctx, n_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(path, n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=n_batch, verbose=False)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    llm.reset()
    start = time.perf_counter()
    if request["op"] == "pp":
        llm.eval(request["tokens"])
    else:
        for token in request["tokens"]:
            llm.eval([token])
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, python: str, path: str, threads: int, n_ctx: int, n_batch: int):
        self.process = subprocess.Popen(
            [python, "-c", LLAMA_WORKER, path, str(threads), str(n_ctx), str(n_batch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if not json.loads(self.process.stdout.readline()).get("ready"):
            raise RuntimeError("the llama.cpp worker did not start")

    def _ask(self, op: str, tokens: list[int]) -> float:
        self.process.stdin.write(json.dumps({"op": op, "tokens": tokens}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["seconds"]

    def prefill(self, tokens: list[int]) -> float:
        return self._ask("pp", tokens)

    def decode(self, tokens: list[int]) -> float:
        return self._ask("tg", tokens)


class Gptgen:
    name = "gptgen"

    def __init__(self, path: str, threads: int):
        self.model = gptgen.load(path, threads=threads)

    def prefill(self, tokens: list[int]) -> float:
        return time_prefill(self.model, tokens)

    def decode(self, tokens: list[int]) -> float:
        return time_decode(self.model, [[t] for t in tokens])


class Transformers:
    name = "transformers"

    def __init__(self, path: str, threads: int):
        import os

        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        if os.path.isdir(path):  # a checkpoint directory; float32, as transformers runs on CPUs
            self.model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), torch_dtype=torch.float32)

    def prefill(self, tokens: list[int]) -> float:
        with self.torch.no_grad():
            start = time.perf_counter()
            self.model(self.torch.tensor([tokens]))
            return time.perf_counter() - start

    def decode(self, tokens: list[int]) -> float:
        with self.torch.no_grad():
            start = time.perf_counter()
            past = None
            for token in tokens:
                out = self.model(self.torch.tensor([[token]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
            return time.perf_counter() - start


def memory_bandwidth(n_bytes: int = 1 << 29, repetitions: int = 5) -> float:
    """Bytes per second read by a dot product of a large float32 array with itself (NumPy's
    BLAS, every core), best of `repetitions`: decoding reads weights and writes almost nothing,
    so read bandwidth is its ceiling. (A copy's figure is lower: writes cost more than reads.)"""
    data = np.ones(n_bytes // 4, dtype=np.float32)
    best = min(_timed_dot(data) for _ in range(repetitions))
    return data.nbytes / best


def _timed_dot(data: np.ndarray) -> float:
    start = time.perf_counter()
    np.dot(data, data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-p", "--n-prompt", type=int, default=512)
    parser.add_argument("-n", "--n-gen", type=int, default=128)
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--llama-python", help="a Python with llama-cpp-python installed (a separate virtualenv)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    path = str(resolve(args.model))
    engines = [Gptgen(path, args.threads)]
    if args.llama_python:
        engines.append(LlamaCpp(args.llama_python, path, args.threads, args.n_prompt + args.n_gen + 8, args.n_prompt))
    try:
        engines.append(Transformers(path, args.threads))
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    vocab = engines[0].model.spec.config["n_vocab"]
    prompt = rng.integers(0, vocab, size=args.n_prompt).tolist()
    gen = rng.integers(0, vocab, size=args.n_gen).tolist()
    for engine in engines:  # warm-up
        engine.prefill(prompt[:32])
        engine.decode(gen[:4])
    samples = {e.name: {"pp": [], "tg": []} for e in engines}
    bandwidths = []
    for _ in range(args.repetitions):
        for engine in engines:  # interleaved: every engine once per round
            samples[engine.name]["pp"].append(args.n_prompt / engine.prefill(prompt))
            samples[engine.name]["tg"].append(args.n_gen / engine.decode(gen))
        bandwidths.append(memory_bandwidth(repetitions=1))

    weight_bytes = sum(t.data.nbytes for t in engines[0].model.spec.tensors.values())
    # The best probe of the run: the machine's bandwidth when nothing else takes a share.
    bandwidth = max(bandwidths)
    ceiling = bandwidth / weight_bytes
    medians = {name: {test: statistics.median(v) for test, v in tests.items()} for name, tests in samples.items()}
    report = {
        "model": path,
        "threads": args.threads,
        "cpu": cpu_info(),
        "kernels": gptgen._native.kernel_name(),
        "tests": {"pp": f"pp{args.n_prompt}", "tg": f"tg{args.n_gen}"},
        "samples_ts": samples,
        "median_ts": medians,
        "memory_bandwidth_gb_s": bandwidth / 1e9,
        "memory_bandwidth_samples_gb_s": [b / 1e9 for b in bandwidths],
        "weight_bytes": weight_bytes,
        "decode_ceiling_ts": ceiling,
        "gptgen_fraction_of_ceiling": medians["gptgen"]["tg"] / ceiling,
        "ratios": {
            name: {test: medians["gptgen"][test] / m[test] for test in m} for name, m in medians.items() if name != "gptgen"
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{path}  threads={args.threads}  {report['cpu']['model']}  ({' '.join(report['cpu']['flags'])})")
    for name, m in medians.items():
        print(f"  {name:13s} pp{args.n_prompt}: {m['pp']:8.1f} t/s   tg{args.n_gen}: {m['tg']:7.1f} t/s  (medians of {args.repetitions})")
    for name, r in report["ratios"].items():
        print(f"  gptgen / {name}: pp {r['pp']:.2f}x   tg {r['tg']:.2f}x")
    print(f"  memory bandwidth {bandwidth / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.1f} MB -> decode ceiling {ceiling:.0f} t/s;"
          f" gptgen at {100 * report['gptgen_fraction_of_ceiling']:.0f}%")


if __name__ == "__main__":
    sys.exit(main())
