"""Read-only memory maps of weight files, in 2 MB pages where Linux allows.

Decoding streams every weight once per token, and in small pages that costs a TLB miss every
4 KB; in 2 MB pages SmolLM2's decode ran 3-6% faster here, GPT-2's f32 decode 5%
(benches/RESULTS.md). Linux maps a file in 2 MB pages only where its page cache holds the file
in 2 MB folios, and it allocates those when a page is first read through a mapping advised
MADV_HUGEPAGE (on file systems with large folios: ext4, XFS, ...). A file that was written or
read otherwise stays in small folios until it leaves the cache, so `gptgen pull` drops the file
it installs from the cache (`drop_cached`) before anything maps it.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np


def map_file(path: Path | str) -> np.ndarray:
    """The whole file as a read-only uint8 array over a shared memory map (kept alive by the
    array), advised MADV_HUGEPAGE where the platform has it."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:  # mmap refuses empty files
            return np.zeros(0, np.uint8)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            mapped.madvise(advice)
        except OSError:  # a kernel without transparent huge pages: 4 KB pages it is
            pass
    return np.frombuffer(mapped, dtype=np.uint8)


def drop_cached(path: Path) -> None:
    """Drops `path`'s clean pages from the page cache (best effort: pages still dirty or mapped
    stay), so that the next mapping reads it in 2 MB folios instead of the writer's small ones."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError:
        pass
