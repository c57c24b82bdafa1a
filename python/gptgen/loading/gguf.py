"""GGUF files, read with the `gguf` package over a memory map. Every tensor's type, shape and
byte length is checked against the metadata before a view of it can reach the engine."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GptgenError
from ..tokenizer import Tokenizer
from .mapping import map_file
from .spec import ModelSpec, TensorView, storage_bytes

# ggml type names (gguf.GGMLQuantizationType) -> engine dtype names.
_GGML_TYPES = {
    "F32": "f32",
    "F16": "f16",
    "BF16": "bf16",
    "Q4_0": "q4_0",
    "Q4_1": "q4_1",
    "Q5_0": "q5_0",
    "Q5_1": "q5_1",
    "Q8_0": "q8_0",
    "Q4_K": "q4_k",
    "Q6_K": "q6_k",
}


def is_gguf_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"GGUF"


class _Metadata:
    """GGUF key/values with typed, checked accessors."""

    def __init__(self, path: Path, reader):
        self.path = path
        self.fields = reader.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception:
            raise GptgenError(f"{self.path}: metadata {key} cannot be read") from None

    def positive_int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        if value is None:
            raise GptgenError(f"{self.path}: metadata {key} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise GptgenError(f"{self.path}: metadata {key} must be a positive integer, not {value!r}")
        return int(value)

    def positive_float(self, key: str, default: float | None = None) -> float:
        value = self.get(key, default)
        if value is None:
            raise GptgenError(f"{self.path}: metadata {key} is missing")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < float("inf"):
            raise GptgenError(f"{self.path}: metadata {key} must be a positive number, not {value!r}")
        return float(value)

    def string_list(self, key: str, default: list[str] | None = None) -> list[str]:
        value = self.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise GptgenError(f"{self.path}: metadata {key} must be a list of strings")
        return value


@functools.cache
def _reader_class():
    from gguf import GGUFReader

    class PlainArrayReader(GGUFReader):
        """GGUFReader over `map_file`'s plain array instead of the np.memmap it opens. The
        reader slices its buffer several times per metadata string (~100k strings in a
        vocabulary), and each slice of an np.memmap runs memmap's Python-level hooks: with a
        plain array the first load of SmolLM2's file reads in ~0.7 s instead of ~2.0 s. The
        weights' views are slices of it too, so they get its 2 MB pages."""

        @property
        def data(self) -> np.ndarray:
            return self._plain_data

        @data.setter
        def data(self, value: np.memmap) -> None:
            self._plain_data = map_file(value.filename)

    return PlainArrayReader


def _open(path: Path):
    try:
        return _reader_class()(path, "r")
    except (ValueError, IndexError, KeyError, OSError, TypeError, OverflowError, MemoryError) as e:
        raise GptgenError(f"{path}: not a readable GGUF file ({e})") from None


def load_gguf(path: Path) -> tuple[ModelSpec, Tokenizer]:
    """The model in a GGUF file; from its saved index when the file has been loaded before."""
    from . import gguf_index

    loaded = gguf_index.load(path)
    if loaded is None:
        spec, tokenizer, offsets = _parse(path)
        gguf_index.save(path, spec, tokenizer, offsets)
        loaded = spec, tokenizer
    return loaded


def _parse(path: Path) -> tuple[ModelSpec, Tokenizer, dict[str, int]]:
    """Reads and checks the whole file; also returns each tensor's first byte in the file."""
    reader = _open(path)
    meta = _Metadata(path, reader)
    arch = meta.get("general.architecture")
    if arch not in ("llama", "gpt2"):
        raise GptgenError(f"{path}: architecture {arch!r} is not supported (supported: llama, gpt2)")
    n_embd = meta.positive_int(f"{arch}.embedding_length")
    n_head = meta.positive_int(f"{arch}.attention.head_count")
    tokenizer = _tokenizer(meta)
    config: dict[str, Any] = {
        "n_ctx": meta.positive_int(f"{arch}.context_length"),
        "n_embd": n_embd,
        "n_layer": meta.positive_int(f"{arch}.block_count"),
        "n_head": n_head,
        "n_kv_head": meta.positive_int(f"{arch}.attention.head_count_kv", n_head),
        "n_ff": meta.positive_int(f"{arch}.feed_forward_length"),
        "head_dim": n_embd // n_head,
        # f16 keys and values, as llama.cpp keeps them: same memory, same numerics.
        "kv_cache": "f16",
    }
    if arch == "llama":
        config["norm_eps"] = meta.positive_float("llama.attention.layer_norm_rms_epsilon")
        config["rope_base"] = meta.positive_float("llama.rope.freq_base", 10000.0)
        config["rope_dims"] = meta.positive_int("llama.rope.dimension_count", config["head_dim"])
        config["rope_pairing"] = "adjacent"
        if meta.get("llama.rope.scaling.type", "none") not in ("none", "linear") or meta.get("llama.rope.scaling.factor", 1.0) != 1.0:
            raise GptgenError(f"{path}: RoPE scaling is not supported")
    else:
        config["norm_eps"] = meta.positive_float("gpt2.attention.layer_norm_epsilon", 1e-5)
    tensors, offsets = _tensors(path, reader)
    embd = tensors.get("token_embd.weight")
    if embd is None or len(embd.shape) != 2:
        raise GptgenError(f"{path}: token_embd.weight is missing or not 2-D")
    config["n_vocab"] = embd.shape[0]
    if tokenizer.vocab_size > config["n_vocab"]:
        raise GptgenError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but token_embd only {config['n_vocab']} rows")
    spec = ModelSpec(
        arch=arch,
        config=config,
        tensors=tensors,
        path=path,
        format="gguf",
        eos_token_ids=tokenizer.eos_ids,
        bos_token_id=tokenizer.bos_id,
        chat_template=meta.get("tokenizer.chat_template"),
    )
    return spec, tokenizer, offsets


def _tensors(path: Path, reader) -> tuple[dict[str, TensorView], dict[str, int]]:
    tensors: dict[str, TensorView] = {}
    offsets: dict[str, int] = {}
    for t in reader.tensors:
        where = f"{path}: tensor {t.name}"
        dtype = _GGML_TYPES.get(getattr(t.tensor_type, "name", str(t.tensor_type)))
        if dtype is None:
            raise GptgenError(f"{where}: type {t.tensor_type!r} is not supported (supported: {', '.join(_GGML_TYPES)})")
        if t.name in tensors:
            raise GptgenError(f"{where}: appears twice")
        if (t.data_offset - reader.data_offset) % reader.alignment:
            raise GptgenError(f"{where}: data offset is not a multiple of the file's alignment ({reader.alignment})")
        # GGUF lists dims innermost first; the engine wants them outermost first.
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if not shape or any(d <= 0 for d in shape) or len(shape) > 4:
            raise GptgenError(f"{where}: shape {shape} is not valid")
        try:
            n_bytes = storage_bytes(dtype, shape)
        except GptgenError as e:
            raise GptgenError(f"{where}: {e}") from None
        data = np.asarray(t.data)
        if not data.flags.c_contiguous or data.nbytes != n_bytes:
            raise GptgenError(f"{where}: holds {data.nbytes} bytes, its shape and type need {n_bytes}")
        data = data.reshape(-1).view(np.uint8)
        if data.flags.writeable:
            data = data.view()
            data.flags.writeable = False
        tensors[t.name] = TensorView(data=data, dtype=dtype, shape=shape)
        offsets[t.name] = int(t.data_offset)
    return tensors, offsets


# llama.cpp's pre-tokenizer names -> how the text is split before BPE.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("gpt-2", "default"):
        return byte_level
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("llama-bpe", "llama3"):
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    return None


def _tokenizer(meta: _Metadata) -> Tokenizer:
    """A `tokenizers` byte-level BPE built from the GGUF vocabulary and merges."""
    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as HFTokenizer

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GptgenError(f"{meta.path}: tokenizer model {kind!r} is not supported (byte-level BPE, 'gpt2')")
    pre = meta.get("tokenizer.ggml.pre", "default")
    pre_tokenizer = _pre_tokenizer(pre)
    if pre_tokenizer is None:
        raise GptgenError(f"{meta.path}: tokenizer pre-type {pre!r} is not supported (gpt-2, smollm, llama-bpe)")
    tokens = meta.string_list("tokenizer.ggml.tokens")
    merges = meta.string_list("tokenizer.ggml.merges", [])
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise GptgenError(f"{meta.path}: {len(types)} token types for {len(tokens)} tokens")
    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise GptgenError(f"{meta.path}: merge {m!r} is not two tokens")
        pairs.append((parts[0], parts[1]))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise GptgenError(f"{meta.path}: the vocabulary has duplicate tokens")
    try:
        backend = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in ("llama-bpe", "llama3")))
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise GptgenError(f"{meta.path}: inconsistent vocabulary and merges ({e})") from None
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    # Control tokens (type 3) are specials; user-defined ones (4) are matched whole but keep their text.
    backend.add_tokens([AddedToken(tokens[i], special=t == 3, normalized=False) for i, t in enumerate(types) if t in (3, 4)])
    n = len(tokens)

    def token_id(key: str) -> int | None:
        value = meta.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < n:
            raise GptgenError(f"{meta.path}: {key} {value!r} is not a token id")
        return int(value)

    eos = token_id("tokenizer.ggml.eos_token_id")
    eot = token_id("tokenizer.ggml.eot_token_id")
    bos = token_id("tokenizer.ggml.bos_token_id")
    eos_ids = [i for i in dict.fromkeys([eos, eot]) if i is not None]
    return Tokenizer(backend, bos_id=bos, eos_ids=eos_ids, add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))
