"""Property-based fuzzing of the loaders: byte-level mutations of small valid files must load
or fail with GptgenError, nothing else. Bounded for CI; for a longer run:
    GPTGEN_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_loaders.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoints import write_safetensors
from malformed import valid_gguf

from gptgen.errors import GptgenError
from gptgen.loading.safetensors import read_safetensors
from gptgen.model import Model, load_files

EXAMPLES = int(os.environ.get("GPTGEN_FUZZ_EXAMPLES", "1000"))
WORK = Path(tempfile.mkdtemp(prefix="gptgen-fuzz-"))
GOOD_GGUF = valid_gguf(WORK).read_bytes()
_st = WORK / "good.safetensors"
write_safetensors(_st, {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float32)}, "f32")
GOOD_ST = _st.read_bytes()

# Half the edits land in the first 4 KiB, where the header and metadata live.
positions = st.one_of(st.integers(min_value=0, max_value=4096), st.integers(min_value=0))
mutations = st.lists(st.tuples(positions, st.integers(min_value=0, max_value=255)), min_size=1, max_size=8)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


def _load(path: Path) -> None:
    spec, tokenizer = load_files(path)
    model = Model(spec, tokenizer, threads=1)
    model.new_session(4).forward([0])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=mutations, cut=st.one_of(st.none(), st.integers(min_value=0, max_value=len(GOOD_GGUF))))
def test_mutated_gguf_loads_or_fails_cleanly(edits, cut):
    path = WORK / "fuzz.gguf"
    path.write_bytes(mutate(GOOD_GGUF, edits, cut))
    try:
        _load(path)
    except GptgenError:
        pass


@settings(max_examples=EXAMPLES, deadline=None)
@given(edits=mutations, cut=st.one_of(st.none(), st.integers(min_value=0, max_value=len(GOOD_ST))))
def test_mutated_safetensors_reads_or_fails_cleanly(edits, cut):
    path = WORK / "fuzz.safetensors"
    path.write_bytes(mutate(GOOD_ST, edits, cut))
    try:
        for view in read_safetensors(path).values():
            view.to_numpy()
    except GptgenError:
        pass
