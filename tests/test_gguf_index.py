"""The saved index of a GGUF file: a second load gives the same model as a full parse, a
changed file is parsed again, and a broken index or an unwritable cache never matters."""

from __future__ import annotations

import os

import numpy as np
import pytest

from malformed import valid_gguf

from gptgen.loading import gguf_index
from gptgen.loading.gguf import _parse, load_gguf


@pytest.fixture
def cache(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("GPTGEN_HOME", str(home))
    return home / "gguf-index"


def _logits(spec, tokenizer, prompt="hello there"):
    from gptgen.model import Model

    ids = tokenizer.encode(prompt)
    return Model(spec, tokenizer, threads=1).new_session(len(ids)).forward(ids, all_logits=True)


def _assert_same_model(a, b):
    (spec_a, tok_a), (spec_b, tok_b) = a, b
    assert spec_a.config == spec_b.config and spec_a.arch == spec_b.arch
    assert (spec_a.bos_token_id, spec_a.eos_token_ids, spec_a.chat_template) == (spec_b.bos_token_id, spec_b.eos_token_ids, spec_b.chat_template)
    assert spec_a.tensors.keys() == spec_b.tensors.keys()
    for name, t in spec_a.tensors.items():
        u = spec_b.tensors[name]
        assert (t.dtype, t.shape) == (u.dtype, u.shape) and np.array_equal(t.data, u.data), name
    text = "Hello <|end|> wörld 123 \n\n"
    assert tok_a.encode(text) == tok_b.encode(text) and tok_a.add_bos == tok_b.add_bos
    np.testing.assert_array_equal(_logits(*a), _logits(*b))


def test_second_load_comes_from_the_index_and_equals_a_full_parse(tmp_path, cache):
    path = valid_gguf(tmp_path)
    first = load_gguf(path)
    assert len(list(cache.glob("*.json"))) == 1
    parsed = _parse(path)[:2]
    from_index = gguf_index.load(path)
    assert from_index is not None
    _assert_same_model(from_index, parsed)
    _assert_same_model(load_gguf(path), first)


def test_a_sentencepiece_file_loads_from_its_index_too(tmp_path, cache):
    """Its tokenizer comes back with its SentencePiece byte view (the tiny SentencePiece file)."""
    from conftest import FIXTURES

    path = tmp_path / "tiny-spm.gguf"
    path.write_bytes((FIXTURES / "tiny-spm" / "tiny-spm.gguf").read_bytes())
    first = load_gguf(path)
    from_index = gguf_index.load(path)
    assert from_index is not None and from_index[1].sentencepiece
    _assert_same_model(from_index, first)
    ids = first[1].encode(" naïve café 日本語")
    # add_space_prefix's space comes back, as llama.cpp writes it.
    assert from_index[1].decode(ids) == first[1].decode(ids) == "  naïve café 日本語"


def test_a_changed_file_is_parsed_again(tmp_path, cache):
    path = valid_gguf(tmp_path)
    load_gguf(path)
    # Different weights at the same path (and a different mtime).
    changed = valid_gguf(tmp_path, "changed.gguf", lambda w: w["output_norm.weight"].__setitem__(0, 7.0))
    os.replace(changed, path)
    assert gguf_index.load(path) is None
    spec, _ = load_gguf(path)
    assert spec.tensors["output_norm.weight"].to_numpy()[0] == 7.0


def test_a_broken_index_means_a_full_parse(tmp_path, cache):
    path = valid_gguf(tmp_path)
    load_gguf(path)
    (index,) = cache.glob("*.json")
    for garbage in (b"{not json", b"[]", b'{"identity": 1}', index.read_bytes()[:-100]):
        index.write_bytes(garbage)
        assert gguf_index.load(path) is None
        _assert_same_model(load_gguf(path), _parse(path)[:2])


def test_an_index_pointing_outside_the_file_cannot_reach_the_engine(tmp_path, cache):
    import json

    from gptgen.errors import GptgenError

    path = valid_gguf(tmp_path)
    load_gguf(path)
    (index,) = cache.glob("*.json")
    record = json.loads(index.read_text())
    record["tensors"][0][3] = path.stat().st_size - 8  # offset near the end: a short view
    index.write_text(json.dumps(record))
    spec, _ = gguf_index.load(path)
    with pytest.raises(GptgenError, match="bytes"):
        spec.engine_tensors()


def test_an_unwritable_cache_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GPTGEN_HOME", str(blocker / "sub"))  # cannot be created
    path = valid_gguf(tmp_path)
    _assert_same_model(load_gguf(path), _parse(path)[:2])


def test_only_the_most_recently_used_indexes_are_kept(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(gguf_index, "_KEEP", 2)
    paths = [valid_gguf(tmp_path, f"m{i}.gguf") for i in range(3)]
    for i, path in enumerate(paths):
        load_gguf(path)
        os.utime(gguf_index._index_file(path), ns=(i * 10**9, i * 10**9))
    assert len(list(cache.glob("*.json"))) == 2
    assert not gguf_index._index_file(paths[0]).exists()


def test_pull_leaves_the_index_ready(cache):
    """A freshly pulled model starts as fast as a model loaded before: pull saves its index."""
    from gptgen import models

    path = models.pull(models.REGISTRY[models.DEFAULT_MODEL], show_progress=False)
    assert len(list(cache.glob("*.json"))) == 1
    assert gguf_index.load(path) is not None
