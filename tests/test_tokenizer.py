"""Tokenizer loading and the UTF-8-safe streaming of byte-level tokens."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

from conftest import TINY_GPT2

from gptgen.tokenizer import Tokenizer

TEXTS = ["Hello, world! 123 — naïve café 🙂", "\n\n  def f(x):\n\treturn x", "日本語のテキスト", "<|endoftext|> after"]


@pytest.fixture(scope="module")
def from_json():
    return Tokenizer.from_hf_dir(TINY_GPT2, bos_id=50256, eos_ids=[50256])


def test_vocab_and_merges_equal_tokenizer_json(tmp_path, from_json):
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((TINY_GPT2 / name).read_bytes())
    from_pair = Tokenizer.from_hf_dir(tmp_path, bos_id=None, eos_ids=[])
    for text in TEXTS[:3]:
        assert from_pair.encode(text) == from_json.encode(text)


def test_special_tokens_in_text_are_parsed(from_json):
    assert from_json.encode("<|endoftext|> after")[0] == 50256


def test_decode_agrees_with_the_tokenizers_library(from_json):
    reference = HFTokenizer.from_file(str(TINY_GPT2 / "tokenizer.json"))
    rng = np.random.default_rng(0)
    for text in TEXTS:
        ids = from_json.encode(text)
        assert from_json.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    for _ in range(50):
        ids = rng.integers(0, 50257, size=rng.integers(1, 30)).tolist()
        assert from_json.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def _multibyte_ids(tokenizer: Tokenizer, rng) -> list[int]:
    """Random sequences rich in tokens that carry only part of a UTF-8 character."""
    partial = [i for i, b in enumerate(tokenizer.token_bytes) if b and any(c >= 0x80 for c in b)]
    whole = tokenizer.encode("a b ü 🙂 €")
    pool = partial + whole
    return [pool[i] for i in rng.integers(0, len(pool), size=rng.integers(1, 40))]


def test_streamed_text_equals_whole_text(from_json):
    rng = np.random.default_rng(1)
    for _ in range(300):
        ids = _multibyte_ids(from_json, rng)
        stream = from_json.stream()
        pieces = [stream.push(i) for i in ids] + [stream.finish()]
        assert "".join(pieces) == from_json.decode(ids)


def test_stream_holds_back_a_split_character(from_json):
    # "🙂" is four bytes spread over several byte-level tokens.
    ids = from_json.encode("🙂")
    assert len(ids) > 1
    stream = from_json.stream()
    pieces = [stream.push(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🙂"
