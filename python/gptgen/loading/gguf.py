"""GGUF files, read with the `gguf` package over a memory map. Every tensor's type, shape and
byte length is checked against the metadata before a view of it can reach the engine."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import families
from ..errors import GptgenError
from ..tokenizer import Tokenizer
from .config import EngineConfig
from .gguf_metadata import GGUFMetadata
from .mapping import map_file
from .spec import ModelSpec, TensorView, storage_bytes, storage_types

# ggml type names (gguf.GGMLQuantizationType) -> engine dtype names: the engine's types,
# whose ggml names are their upper case.
_GGML_TYPES = {name.upper(): name for name in storage_types()}


def is_gguf_file(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == b"GGUF"


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
    meta = GGUFMetadata(path, reader.fields)
    family = families.by_gguf_arch(meta.arch)
    if family is None or family.gguf_config is None:
        raise GptgenError(f"{path}: architecture {meta.arch!r} is not supported (supported: {', '.join(families.gguf_archs())})")
    tokenizer = _tokenizer(meta)
    tensors, offsets = _tensors(path, reader)
    _check_disjoint(path, tensors, offsets)
    embd = tensors.get("token_embd.weight")
    if embd is None or len(embd.shape) != 2:
        raise GptgenError(f"{path}: token_embd.weight is missing or not 2-D")
    n_vocab = embd.shape[0]
    if tokenizer.vocab_size > n_vocab:
        raise GptgenError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but token_embd only {n_vocab} rows")
    # f16 keys and values, as llama.cpp keeps them: same memory, same numerics.
    common = {"n_vocab": n_vocab, "kv_cache": "f16", **meta.sizes()}
    config = family.gguf_config(meta, common)
    factor_tensors = {name: tensors.pop(name) for name in _ROPE_FACTOR_TENSORS if name in tensors}
    if factor_tensors:
        config = _with_rope_factors(path, config, *_chosen_rope_factors(meta, config, factor_tensors))
    spec = ModelSpec(
        arch=family.name,
        config=config,
        tensors=tensors,
        path=path,
        format="gguf",
        eos_token_ids=tokenizer.eos_ids,
        bos_token_id=tokenizer.bos_id,
        chat_template=meta.get("tokenizer.chat_template") or family.chat_template,
    )
    return spec, tokenizer, offsets


# Per-pair divisors of the RoPE angle a file may carry: Llama 3's scaling, or Phi-3's LongRoPE
# pair (for contexts beyond the original one, and within it).
_ROPE_FACTOR_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def _chosen_rope_factors(meta: GGUFMetadata, config: EngineConfig, tensors: dict[str, TensorView]) -> tuple[str, TensorView]:
    """The factors llama.cpp's get_rope_factors uses (rope_freqs; else the long ones for a
    context beyond rope.scaling.original_context_length, else the short ones), with gptgen's
    session context being the model's."""
    if "rope_freqs.weight" in tensors:
        return "rope_freqs.weight", tensors["rope_freqs.weight"]
    original = meta.positive_int(meta.key("rope.scaling.original_context_length"), config.n_ctx)
    name = "rope_factors_long.weight" if config.n_ctx > original else "rope_factors_short.weight"
    if name not in tensors:
        raise GptgenError(f"{meta.path}: {name} is missing ({', '.join(tensors)} given)")
    return name, tensors[name]


def _with_rope_factors(path: Path, config: EngineConfig, name: str, freqs: TensorView) -> EngineConfig:
    """`config` with the file's per-pair divisors of the RoPE angle `name` as its RoPE factors."""
    if config.rope is None:
        raise GptgenError(f"{path}: {name} is given but the model has no RoPE")
    want = config.rope.dims // 2
    if freqs.dtype != "f32" or freqs.shape != (want,):
        raise GptgenError(f"{path}: {name} is {freqs.dtype} {list(freqs.shape)}; RoPE over {config.rope.dims} dimensions needs f32 [{want}]")
    factors = freqs.to_numpy()
    if not (np.isfinite(factors).all() and (factors > 0).all()):
        raise GptgenError(f"{path}: {name} holds values that are not positive numbers")
    return replace(config, rope=replace(config.rope, factors=tuple(float(f) for f in factors)))


def _check_disjoint(path: Path, tensors: dict[str, TensorView], offsets: dict[str, int]) -> None:
    """Each tensor's bytes must end before the next tensor's begin (llama.cpp requires each
    offset to follow the previous tensor's padded end): a tensor whose declared type or shape
    was changed would otherwise read its neighbour's bytes as its own."""
    spans = sorted((offsets[name], offsets[name] + t.data.nbytes, name) for name, t in tensors.items())
    for (_, end, name), (start, _, following) in zip(spans, spans[1:]):
        if start < end:
            raise GptgenError(f"{path}: tensor {name} overlaps tensor {following} (its type or shape does not match its data)")


def _tensors(path: Path, reader) -> tuple[dict[str, TensorView], dict[str, int]]:
    tensors: dict[str, TensorView] = {}
    offsets: dict[str, int] = {}
    for t in reader.tensors:
        where = f"{path}: tensor {t.name}"
        type_name = getattr(t.tensor_type, "name", str(t.tensor_type))
        dtype = _GGML_TYPES.get(type_name)
        if dtype is None:
            raise GptgenError(f"{where}: type {type_name} is not supported (supported: {', '.join(_GGML_TYPES)})")
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


# Tokens that end generation whatever the file's eos and eot ids say: llama.cpp's
# llama_vocab::load marks these texts end-of-generation, and the fill-in-the-middle pad, repo
# and file-separator tokens it finds by their texts too.
_END_OF_GENERATION_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>",
    "<eos>", "<turn|>", "<|tool_response>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>",
)


def _tokenizer(meta: GGUFMetadata) -> Tokenizer:
    """A `tokenizers` tokenizer built from the GGUF vocabulary: byte-level BPE with the file's
    merges (`tokenizer.ggml.model` gpt2), or SentencePiece's BPE with byte fallback (llama)."""
    from tokenizers import AddedToken

    kind = meta.get("tokenizer.ggml.model")
    if kind not in ("gpt2", "llama"):
        raise GptgenError(f"{meta.path}: tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2', SentencePiece 'llama')")
    tokens = meta.string_list("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise GptgenError(f"{meta.path}: {len(types)} token types for {len(tokens)} tokens")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise GptgenError(f"{meta.path}: the vocabulary has duplicate tokens")
    backend = _byte_level_bpe(meta, vocab) if kind == "gpt2" else _sentencepiece_bpe(meta, tokens, types, vocab)
    # As llama.cpp parses them in text: control (type 3) and unknown (2) tokens are specials,
    # user-defined ones (4) are matched whole but keep their text.
    backend.add_tokens([AddedToken(tokens[i], special=t in (2, 3), normalized=False) for i, t in enumerate(types) if t in (2, 3, 4)])
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
    # As llama.cpp: generation also ends at the tokens it knows by their text.
    ends = sorted(vocab[text] for text in _END_OF_GENERATION_TEXTS if text in vocab)
    eos_ids = [i for i in dict.fromkeys([eos, eot, *ends]) if i is not None]
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    return Tokenizer(backend, bos_id=bos, eos_ids=eos_ids, add_bos=add_bos, sentencepiece=kind == "llama")


def _byte_level_bpe(meta: GGUFMetadata, vocab: dict[str, int]):
    """GPT-2-style byte-level BPE: the file's merges, its pre-tokenizer's split."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models

    pre = meta.get("tokenizer.ggml.pre", "default")
    pre_tokenizer = families.pre_tokenizer(pre)
    if pre_tokenizer is None:
        raise GptgenError(f"{meta.path}: tokenizer pre-type {pre!r} is not supported ({', '.join(families.pre_tokenizer_names())})")
    pairs = []
    for m in meta.string_list("tokenizer.ggml.merges", []):
        parts = m.split(" ")
        if len(parts) != 2:
            raise GptgenError(f"{meta.path}: merge {m!r} is not two tokens")
        pairs.append((parts[0], parts[1]))
    try:
        backend = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre_tokenizer.ignore_merges))
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise GptgenError(f"{meta.path}: inconsistent vocabulary and merges ({e})") from None
    backend.pre_tokenizer = pre_tokenizer.build()
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(meta: GGUFMetadata, tokens: list[str], types: list[int], vocab: dict[str, int]):
    """SentencePiece's BPE as llama.cpp runs it: spaces as U+2581, pieces merged in order of
    the merged piece's score (as transformers' GGUF converter ranks them), characters without
    a piece as their UTF-8 bytes' `<0xNN>` tokens; with `add_space_prefix`, a space before each
    run of text (the start, and after every special token)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, normalizers

    scores = meta.get("tokenizer.ggml.scores")
    if not isinstance(scores, list) or len(scores) != len(tokens) or not all(isinstance(v, (int, float)) for v in scores):
        raise GptgenError(f"{meta.path}: tokenizer.ggml.scores must be one number per token")
    # Every split of a normal piece into two pieces is a merge, ranked by the piece's score.
    merges = []
    for i, (piece, score) in enumerate(zip(tokens, scores)):
        if types[i] == 1:
            merges.extend((-score, vocab[piece[:k]], vocab[piece[k:]]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab)
    merges.sort()
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    unk_token = tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None
    try:
        backend = HFTokenizer(models.BPE(vocab=vocab, merges=[(tokens[a], tokens[b]) for _, a, b in merges], unk_token=unk_token, fuse_unk=True, byte_fallback=True))
    except Exception as e:  # the tokenizers library raises plain Exceptions
        raise GptgenError(f"{meta.path}: inconsistent SentencePiece vocabulary ({e})") from None
    spaces = [normalizers.Replace(" ", "\u2581")]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        spaces.insert(0, normalizers.Prepend("\u2581"))
    # No decoder: text comes from each token's bytes (`Tokenizer(sentencepiece=True)`).
    backend.normalizer = normalizers.Sequence(spaces)
    return backend
