"""Prompt-lookup decoding against plain decoding, in ONE run (plain and lookup alternated):
greedy, 256 new tokens, on a summarize-this-text task (a license text), a rewrite-this-code
task (a module of gptgen's own), and a prompt whose answer does not repeat it.

    python benches/lookup.py [--model NAME] [--lookup 2,4,8] [-r 3]

Prints decode tokens/s (prompt excluded), the ratio to plain decoding, and the share of draft
tokens accepted, per task and draft length; checks on the way that every run's tokens equal
the plain run's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import gptgen
from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams

ROOT = Path(__file__).resolve().parent.parent


def tasks(model) -> dict[str, list[int]]:
    license_text = (ROOT / "tests" / "fixtures" / "texts" / "apache-2.0.txt").read_text()[:3000]
    # The drafting function of gptgen's own lookup module (~400 tokens with the request).
    source = (ROOT / "python" / "gptgen" / "lookup.py").read_text()
    code = source[: source.index("class DraftLength")]
    chats = {
        "summarize": f"Summarize this license, quoting its key sentences:\n\n{license_text}",
        "rewrite code": f"Rewrite this Python code with clearer variable names. Give all of it.\n\n```python\n{code}```",
        "no repetition": "Write a short story about a lighthouse keeper and a storm.",
    }
    return {name: model.request([{"role": "user", "content": text}]).prompt_tokens for name, text in chats.items()}


def timed(model, ids: list[int], n: int, lookup: int):
    result = generate(model, GenerationRequest(ids, n, SamplingParams(temperature=0), ignore_eos=True, lookup=lookup))
    t = result.timings
    return result.tokens, t.decode_tokens / t.decode_s, t.accepted / t.drafted if t.drafted else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lookup", default="2,4,8", help="Draft lengths (comma-separated).")
    ap.add_argument("-n", type=int, default=256, help="New tokens.")
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    args = ap.parse_args()
    model = gptgen.load(args.model, threads=args.threads)
    lengths = [int(v) for v in args.lookup.split(",")]
    print(f"# {model.spec.path.name}, {args.threads} threads, greedy, {args.n} new tokens, medians of {args.repetitions}\n")
    print("| task | prompt tokens | plain t/s | " + " | ".join(f"lookup {k}: t/s (x, accepted)" for k in lengths) + " |")
    print("|---|---:|---:|" + "---:|" * len(lengths))
    for name, ids in tasks(model).items():
        timed(model, ids, 16, 0)  # warm-up
        plain_rates, rates = [], {k: [] for k in lengths}
        accepted: dict[int, float] = {}
        for _ in range(args.repetitions):
            plain_tokens, rate, _ = timed(model, ids, args.n, 0)
            plain_rates.append(rate)
            for k in lengths:
                tokens, rate, share = timed(model, ids, args.n, k)
                if tokens != plain_tokens:
                    raise SystemExit(f"{name}: lookup {k} changed the tokens")
                rates[k].append(rate)
                accepted[k] = share
        plain = statistics.median(plain_rates)
        cells = [f"{statistics.median(rates[k]):.1f} ({statistics.median(rates[k]) / plain:.2f}x, {accepted[k]:.0%})" for k in lengths]
        print(f"| {name} | {len(ids)} | {plain:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
