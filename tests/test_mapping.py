"""Weight files are mapped read-only and advised into 2 MB pages, by every loader."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_GPT2
from malformed import valid_gguf

from gptgen.loading.mapping import drop_cached, map_file

LINUX_THP = sys.platform == "linux" and Path("/sys/kernel/mm/transparent_hugepage/enabled").exists()


def _vm_flags(address: int) -> set[str]:
    """The VmFlags the kernel reports for the mapping of this process that holds `address`."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        span = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            inside = int(span[1], 16) <= address < int(span[2], 16)
        elif inside and line.startswith("VmFlags:"):
            return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_map_file_is_the_whole_file_read_only(tmp_path):
    data = os.urandom((3 << 20) + 5)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    drop_cached(path)  # best effort; the bytes read are the same either way
    mapped = map_file(path)
    assert mapped.dtype == np.uint8 and mapped.tobytes() == data
    with pytest.raises(ValueError):
        mapped[0] = 1
    (tmp_path / "empty.bin").write_bytes(b"")
    assert map_file(tmp_path / "empty.bin").size == 0


@pytest.mark.skipif(not LINUX_THP, reason="MADV_HUGEPAGE is Linux's, with transparent huge pages")
def test_every_loader_maps_weights_advised_into_huge_pages(tmp_path, monkeypatch):
    import gptgen
    from gptgen.loading import gguf_index

    monkeypatch.setenv("GPTGEN_HOME", str(tmp_path / "home"))
    path = valid_gguf(tmp_path)
    first = gptgen.load(str(path), threads=1)  # parsed in full (gguf's reader)
    assert gguf_index.load(path) is not None
    again = gptgen.load(str(path), threads=1)  # from the saved index
    checkpoint = gptgen.load(str(TINY_GPT2), threads=1)  # safetensors
    for model in (first, again, checkpoint):
        for view in model.spec.tensors.values():
            assert "hg" in _vm_flags(view.data.ctypes.data)
    # Only the advice differs: an unadvised mapping of the same file carries no "hg".
    plain = np.memmap(path, dtype=np.uint8, mode="r")
    assert "hg" not in _vm_flags(plain.ctypes.data)
