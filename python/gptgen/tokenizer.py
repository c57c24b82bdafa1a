"""Tokenization through the Hugging Face `tokenizers` library, and the byte view of each token
that lets generated text be streamed without ever splitting a UTF-8 character."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import GptgenError


def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class Tokenizer:
    """Text <-> token ids for one model.

    `add_bos` prepends the BOS id to every encoded prompt (Llama-family models want it,
    GPT-2 does not). `sentencepiece`: the vocabulary is SentencePiece's (U+2581 for a space,
    `<0xNN>` byte tokens) rather than byte-level BPE's.
    """

    def __init__(self, backend, *, bos_id: int | None = None, eos_ids: list[int] | None = None, add_bos: bool = False, sentencepiece: bool = False):
        from tokenizers import decoders

        self.backend = backend
        self.bos_id = bos_id
        self.eos_ids = list(eos_ids or [])
        self.add_bos = add_bos
        self.sentencepiece = sentencepiece
        if not sentencepiece and not isinstance(backend.decoder, decoders.ByteLevel):
            raise GptgenError("only byte-level BPE and SentencePiece tokenizers are supported")

    @classmethod
    def from_hf_dir(cls, directory: Path, *, bos_id: int | None, eos_ids: list[int]) -> "Tokenizer":
        """tokenizer.json, or the GPT-2 pair vocab.json + merges.txt."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        tokenizer_json = directory / "tokenizer.json"
        vocab, merges = directory / "vocab.json", directory / "merges.txt"
        try:
            if tokenizer_json.is_file():
                backend = HFTokenizer.from_file(str(tokenizer_json))
            elif vocab.is_file() and merges.is_file():
                backend = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
                backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
                backend.decoder = decoders.ByteLevel()
            else:
                raise GptgenError(f"{directory}: no tokenizer.json, or vocab.json and merges.txt")
        except GptgenError:
            raise
        except Exception as e:  # the tokenizers library raises plain Exceptions for bad files
            raise GptgenError(f"{directory}: cannot load the tokenizer: {e}") from None
        # SentencePiece's BPE as transformers converts it (Llama 2, Mistral, Gemma, Phi-3):
        # pieces with U+2581 for spaces and <0xNN> byte tokens to fall back on.
        sentencepiece = isinstance(backend.model, models.BPE) and bool(backend.model.byte_fallback)
        return cls(backend, bos_id=bos_id, eos_ids=eos_ids, sentencepiece=sentencepiece)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, special tokens written in it parsed as such, BOS added if the
        model wants one."""
        # add_special_tokens lets a tokenizer.json's post-processor add what its model expects.
        ids = self.backend.encode(text, add_special_tokens=True).ids
        if self.add_bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens left out (Hugging Face's skip_special_tokens)."""
        return b"".join(self.token_bytes[i] for i in ids).decode("utf-8", errors="replace")

    @cached_property
    def token_bytes(self) -> "TokenBytes":
        """The bytes each token id stands for; empty for special (control) tokens."""
        specials = {i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        return TokenBytes(self.backend, specials, self.vocab_size, self.sentencepiece)

    def stream(self) -> "TextStream":
        return TextStream(self.token_bytes)


class TokenBytes(Sequence[bytes]):
    """The bytes of each token id, worked out on first use and kept: the whole vocabulary's
    table took ~0.1 s, most of the startup of a short run that needs a handful of tokens."""

    def __init__(self, backend: Any, specials: set[int], size: int, sentencepiece: bool = False):
        self._backend = backend
        self._specials = specials
        self._sentencepiece = sentencepiece
        self._byte_of = _byte_decoder()
        self._bytes: list[bytes | None] = [None] * size

    def __len__(self) -> int:
        return len(self._bytes)

    def __getitem__(self, token_id: int) -> bytes:  # type: ignore[override]  # ids, not slices
        known = self._bytes[token_id]
        if known is None:
            known = self._bytes[token_id] = self._work_out(token_id % len(self._bytes))
        return known

    def _work_out(self, token_id: int) -> bytes:
        token = self._backend.id_to_token(token_id)
        if token is None or token_id in self._specials:
            return b""
        if self._sentencepiece:
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                try:
                    return bytes([int(token[3:5], 16)])
                except ValueError:
                    pass
            return token.replace("\u2581", " ").encode("utf-8")
        if all(c in self._byte_of for c in token):
            return bytes(self._byte_of[c] for c in token)
        return token.encode("utf-8")  # an added, non-special token: its text as written


class TextStream:
    """Turns token ids into text as they arrive. A character whose bytes span several tokens
    is held back until it is whole, so the pieces concatenate to exactly `Tokenizer.decode`."""

    def __init__(self, token_bytes: Sequence[bytes]):
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._token_bytes[token_id])

    def finish(self) -> str:
        """Whatever is still held back (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)
