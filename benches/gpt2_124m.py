"""Writes GPT-2-124M-shaped checkpoints with random weights, for benchmarks without a download:
OUT/f32 and OUT/f16 (Hugging Face layout: config.json, model.safetensors, GPT-2's tokenizer
files from tests/fixtures/tiny-gpt2). Then, for example:

    python benches/gpt2_124m.py /tmp/gpt2-124m
    python benches/compare.py --model /tmp/gpt2-124m/f32 -p 512 -n 128 -r 5

GPT-2 124M: 50257 tokens, 1024 positions, 768 wide, 12 layers of 12 heads, 3072-wide MLP.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from checkpoints import random_gpt2_weights, write_gpt2_checkpoint  # noqa: E402

SHAPE = {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_layer": 12, "n_ff": 3072}
N_HEAD = 12
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    weights = random_gpt2_weights(np.random.default_rng(0), **SHAPE)
    for dtype in ("f32", "f16"):
        directory = args.out / dtype
        write_gpt2_checkpoint(directory, weights, n_head=N_HEAD, dtype=dtype)
        for name in TOKENIZER_FILES:
            shutil.copy(TESTS / "fixtures" / "tiny-gpt2" / name, directory / name)
        print(directory)


if __name__ == "__main__":
    main()
