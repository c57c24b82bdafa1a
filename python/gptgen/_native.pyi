"""The Rust engine (rust/py.rs)."""

import numpy as np
import numpy.typing as npt

def kernel_name() -> str:
    """The SIMD kernel family in use: "avx2" or "scalar" (GPTGEN_FORCE_SCALAR=1)."""

class Engine:
    """A loaded model on its own thread pool (threads=0: one per physical core).

    config: n_vocab, n_ctx, n_embd, n_layer, n_head, n_kv_head, n_ff, norm_eps.
    tensors: {name: (read-only contiguous uint8 buffer, "f32" | "f16" | "bf16", shape,
    "out_in" | "in_out")}. Raises ValueError for anything inconsistent.
    """

    def __init__(
        self,
        arch: str,
        config: dict[str, int | float],
        tensors: dict[str, tuple[npt.NDArray[np.uint8], str, list[int], str]],
        threads: int = 0,
    ) -> None: ...
    @property
    def threads(self) -> int: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    def new_session(self, max_seq: int) -> Session: ...

class Session:
    """One sequence: a KV cache of max_seq positions."""

    def forward(self, tokens: list[int], all_logits: bool = False) -> npt.NDArray[np.float32]:
        """Logits [len(tokens), n_vocab] if all_logits, else [1, n_vocab] for the last token."""
    @property
    def pos(self) -> int: ...
    @property
    def max_seq(self) -> int: ...
    def rewind(self, pos: int) -> None: ...
