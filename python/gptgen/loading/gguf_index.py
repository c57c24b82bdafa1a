"""What loading a GGUF file derived from its header, kept for the next load.

gguf's reader builds NumPy views of every metadata element: ~0.7 s for a 49k-token
vocabulary (over 2 s before gguf.py gave it a plain array), longer than generating a short reply. The first load of a file parses it in full
(gguf.py) and saves the result here as JSON: the engine config, the tokenizer as
`tokenizers` serializes it, and the tensor table (name, type, shape, byte range). Later loads
of the same file (same path, size, mtime and inode, read by the same versions) map it and make
the views from the table. Anything wrong with a saved index means a full parse; an unwritable
cache only means no index. The most recently used _KEEP indexes are kept. The engine-bound
buffers are checked again in ModelSpec.engine_tensors, so even a tampered index cannot make
the engine read outside the file. `gptgen pull` writes the index as it installs a model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..paths import gguf_index_dir
from ..tokenizer import Tokenizer
from .config import EngineConfig
from .mapping import map_file
from .spec import ModelSpec, TensorView

# Bumped whenever what load_gguf derives changes shape.
_FORMAT = 3
# Indexes kept (least recently used go first): a few MB each for 50k-token vocabularies.
_KEEP = 16


def _identity(path: Path) -> dict:
    """What must be unchanged for a saved index to stand: the file, and the code that read it
    (gptgen's index format and version, and the gguf and tokenizers packages)."""
    from importlib.metadata import version

    st = path.stat()
    return {
        "format": _FORMAT,
        "gptgen": version("gptgen"),
        "gguf": version("gguf"),
        "tokenizers": version("tokenizers"),
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
    }


def _index_file(path: Path) -> Path:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return gguf_index_dir() / f"{digest}.json"


def save(path: Path, spec: ModelSpec, tokenizer: Tokenizer, offsets: dict[str, int]) -> None:
    """Writes the index of `path` (atomically); `offsets`: each tensor's first byte in the file."""
    record = {
        "identity": _identity(path),
        "arch": spec.arch,
        "config": spec.config.as_dict(),
        "eos_token_ids": spec.eos_token_ids,
        "bos_token_id": spec.bos_token_id,
        "chat_template": spec.chat_template,
        "tokenizer": {
            "json": tokenizer.backend.to_str(),
            "bos_id": tokenizer.bos_id,
            "eos_ids": tokenizer.eos_ids,
            "add_bos": tokenizer.add_bos,
            "sentencepiece": tokenizer.sentencepiece,
        },
        "tensors": [[name, t.dtype, list(t.shape), offsets[name], t.data.nbytes] for name, t in spec.tensors.items()],
    }
    try:
        target = _index_file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(record))
        os.replace(partial, target)
        _prune(target.parent)
    except OSError:
        pass  # no index, just a slower next load


def _prune(directory: Path) -> None:
    indexes = sorted(directory.glob("*.json"), key=lambda f: f.stat().st_mtime_ns, reverse=True)
    for stale in indexes[_KEEP:]:
        stale.unlink(missing_ok=True)


def load(path: Path) -> tuple[ModelSpec, Tokenizer] | None:
    """The model from a saved index of `path`, or None when there is no valid one."""
    try:
        index = _index_file(path)
        if not index.is_file():
            return None
        record = json.loads(index.read_text())
        if record["identity"] != _identity(path):
            return None
        loaded = _from_record(path, record)
        os.utime(index)  # recently used: kept by _prune
        return loaded
    except Exception:  # a broken index is never an error: parse the file instead
        return None


def _from_record(path: Path, record: dict) -> tuple[ModelSpec, Tokenizer]:
    from tokenizers import Tokenizer as HFTokenizer

    mapped = map_file(path)
    tensors = {}
    for name, dtype, shape, offset, nbytes in record["tensors"]:
        tensors[name] = TensorView(data=mapped[offset : offset + nbytes], dtype=dtype, shape=tuple(shape))
    t = record["tokenizer"]
    tokenizer = Tokenizer(
        HFTokenizer.from_str(t["json"]), bos_id=t["bos_id"], eos_ids=t["eos_ids"], add_bos=t["add_bos"], sentencepiece=t["sentencepiece"]
    )
    spec = ModelSpec(
        arch=record["arch"],
        config=EngineConfig.from_dict(record["config"]),
        tensors=tensors,
        path=path,
        format="gguf",
        eos_token_ids=record["eos_token_ids"],
        bos_token_id=record["bos_token_id"],
        chat_template=record["chat_template"],
    )
    return spec, tokenizer
