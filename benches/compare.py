"""gptgen against llama.cpp (and Hugging Face transformers, where torch is installed) on the
same GGUF file, threads and machine, measured in ONE run with the engines interleaved
(A B A B ...), so that the ratios are fair on a noisy shared machine: prefill (ppN), decode
(tgN) and the aggregate decode of B sequences together (tgN xB, one forward pass per step).

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
import llama_cpp
from llama_cpp import Llama
path, threads, n_ctx, n_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(path, n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=n_batch, verbose=False)
batched = None  # (context, batch, B): created on the first request for B > 1 sequences


def batched_context(n_seqs, n_steps):
    # One KV stream per sequence, as llama.cpp's parallel decoding sets it up.
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_seqs * 256 * ((n_steps + 8 + 255) // 256)  # llama.cpp pads each stream to 256
    params.n_batch = params.n_ubatch = max(n_seqs, 32)
    params.n_seq_max = n_seqs
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = llm.context_params.flash_attn_type
    return llama_cpp.llama_init_from_model(llm._model.model, params), llama_cpp.llama_batch_init(n_seqs, 0, 1), n_seqs


def decode_batched(steps):
    global batched
    if batched is None or batched[2] != len(steps[0]):
        batched = batched_context(len(steps[0]), len(steps))
    ctx, batch, n_seqs = batched
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    start = time.perf_counter()
    for pos, step in enumerate(steps):  # one llama_decode per step: every sequence's next token
        batch.n_tokens = n_seqs
        for seq, token in enumerate(step):
            batch.token[seq], batch.pos[seq], batch.n_seq_id[seq], batch.logits[seq] = token, pos, 1, 1
            batch.seq_id[seq][0] = seq
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
    return time.perf_counter() - start


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "tg" and len(request["tokens"][0]) > 1:
        print(json.dumps({"seconds": decode_batched(request["tokens"])}), flush=True)
        continue
    llm.reset()
    if request["depth"]:  # already in the cache when the timed part starts
        llm.eval(request["depth"])
    start = time.perf_counter()
    if request["op"] == "pp":
        llm.eval(request["tokens"])
    else:
        for [token] in request["tokens"]:
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

    def _ask(self, op: str, tokens: list, depth: list[int]) -> float:
        self.process.stdin.write(json.dumps({"op": op, "tokens": tokens, "depth": depth}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["seconds"]

    def prefill(self, tokens: list[int], depth: list[int]) -> float:
        return self._ask("pp", tokens, depth)

    def decode(self, steps: list[list[int]], depth: list[int]) -> float:
        return self._ask("tg", steps, depth)


class Gptgen:
    name = "gptgen"

    def __init__(self, path: str, threads: int):
        self.model = gptgen.load(path, threads=threads)

    def prefill(self, tokens: list[int], depth: list[int]) -> float:
        return time_prefill(self.model, tokens, depth)

    def decode(self, steps: list[list[int]], depth: list[int]) -> float:
        return time_decode(self.model, steps, depth)


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

    def _cache_at(self, depth: list[int], batch: int = 1):
        """The KV cache after `depth` (None when empty), for `batch` sequences."""
        if not depth:
            return None
        return self.model(self.torch.tensor([depth] * batch), use_cache=True).past_key_values

    def prefill(self, tokens: list[int], depth: list[int]) -> float:
        with self.torch.no_grad():
            past = self._cache_at(depth)
            start = time.perf_counter()
            self.model(self.torch.tensor([tokens]), past_key_values=past, use_cache=past is not None)
            return time.perf_counter() - start

    def decode(self, steps: list[list[int]], depth: list[int]) -> float:
        with self.torch.no_grad():
            past = self._cache_at(depth, len(steps[0]))
            start = time.perf_counter()
            for step in steps:  # [batch, 1]: every sequence's next token
                out = self.model(self.torch.tensor(step).view(-1, 1), past_key_values=past, use_cache=True)
                past = out.past_key_values
            return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-p", "--n-prompt", type=int, default=512)
    parser.add_argument("-n", "--n-gen", type=int, default=128)
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="also tgN xB: aggregate decode of B sequences together (0 or 1: skip)")
    parser.add_argument("-d", "--depth", type=int, default=0, help="tokens in the KV cache, prefilled untimed, before each test (llama-bench's -d; no batched test then)")
    parser.add_argument("--llama-python", help="a Python with llama-cpp-python installed (a separate virtualenv)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    path = str(resolve(args.model))
    engines = [Gptgen(path, args.threads)]
    if args.llama_python:
        engines.append(LlamaCpp(args.llama_python, path, args.threads, args.depth + max(args.n_prompt, args.n_gen) + 8, args.n_prompt))
    try:
        engines.append(Transformers(path, args.threads))
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    vocab = engines[0].model.spec.config.n_vocab
    prompt = rng.integers(0, vocab, size=args.n_prompt).tolist()
    gen = [[t] for t in rng.integers(0, vocab, size=args.n_gen).tolist()]
    # steps[i]: every sequence's token at step i
    gen_batch = rng.integers(0, vocab, size=(args.n_gen, args.batch)).tolist()
    depth = rng.integers(0, vocab, size=args.depth).tolist()
    batched = args.batch > 1 and not depth
    for engine in engines:  # warm-up
        engine.prefill(prompt[:32], [])
        engine.decode(gen[:4], [])
        if batched:
            engine.decode(gen_batch[:4], [])
    at_depth = f" @ d{args.depth}" if depth else ""
    tests = {"pp": f"pp{args.n_prompt}{at_depth}", "tg": f"tg{args.n_gen}{at_depth}"}
    if batched:
        tests["tg_batch"] = f"tg{args.n_gen} x{args.batch}"
    samples = {e.name: {test: [] for test in tests} for e in engines}
    bandwidths = []
    for _ in range(args.repetitions):
        for engine in engines:  # interleaved: every engine once per round
            samples[engine.name]["pp"].append(args.n_prompt / engine.prefill(prompt, depth))
            samples[engine.name]["tg"].append(args.n_gen / engine.decode(gen, depth))
            if batched:
                samples[engine.name]["tg_batch"].append(args.batch * args.n_gen / engine.decode(gen_batch, []))
        # Read bandwidth with the engine's own threads (a streaming read of 512 MB in its pool):
        # decoding reads weights and writes almost nothing, so this is its ceiling. (NumPy's
        # dot product, the probe before, runs on one thread: ~60% of this on a 2-core Xeon.)
        bandwidths.append(engines[0].model.engine.read_bandwidth(512, 1))

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
        "tests": tests,
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
        # each engine's batched aggregate over its own single-sequence decode
        "batch_speedup": {name: m["tg_batch"] / m["tg"] for name, m in medians.items() if "tg_batch" in m},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{path}  threads={args.threads}  {report['cpu']['model']}  ({' '.join(report['cpu']['flags'])})")
    for name, m in medians.items():
        figures = "   ".join(f"{tests[test]}: {m[test]:7.1f} t/s" for test in tests)
        print(f"  {name:13s} {figures}  (medians of {args.repetitions})")
    for name, r in report["ratios"].items():
        print(f"  gptgen / {name}: " + "   ".join(f"{tests[test]} {r[test]:.2f}x" for test in tests))
    for name, speedup in report["batch_speedup"].items():
        print(f"  {name}: {tests['tg_batch']} / {tests['tg']} = {speedup:.2f}x")
    print(f"  memory bandwidth {bandwidth / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.1f} MB -> decode ceiling {ceiling:.0f} t/s;"
          f" gptgen at {100 * report['gptgen_fraction_of_ceiling']:.0f}%")


if __name__ == "__main__":
    sys.exit(main())
