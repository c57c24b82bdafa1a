"""The Rust engine (rust/py.rs)."""

from typing import Any

import numpy as np
import numpy.typing as npt

MAX_THREADS: int
# The most rows of one session a forward pass takes; longer calls run in passes of this many.
PASS_ROWS: int
"""The most worker threads an Engine starts."""

def kernel_name() -> str:
    """The SIMD kernel family in use: "avx2+vnni", "avx2" or "scalar" (GPTGEN_FORCE_SCALAR=1)."""

def row_sum_class(of: int, index: int) -> tuple[bool, bool, bool]:
    """The class of a row summed as row `index` of a pass of `of` rows: rows of equal class
    get the same arithmetic from every kernel (their keys, values and logits are equal)."""

def storage_types() -> list[tuple[str, int, int, int]]:
    """Every storage type the engine reads, from its one table (rust/tensor.rs): (name,
    elements per block, bytes per block, alignment in bytes), floats being blocks of one.
    Names are "f32", "f16", "bf16", "q4_0", ..., "q4_k", "q6_k"; ggml's are their upper case."""

def dequantize(data: npt.NDArray[np.uint8], dtype: str, row_len: int) -> npt.NDArray[np.float32]:
    """Rows of `row_len` elements stored as `dtype` (any name in `storage_types()`), widened
    to float32 by the engine's kernels."""

class Engine:
    """A loaded model on its own thread pool (threads=0: one per physical core).

    config: a gptgen.loading.config.EngineConfig (read field by field; that class describes
    them). tensors: {name: (read-only contiguous uint8 buffer, dtype as in `dequantize`, shape
    outermost first, "out_in" | "in_out")}. name: what error messages call the model (its
    path). Raises gptgen.errors.EngineError (a ValueError) for anything inconsistent, and from
    a forward pass whose logits are NaN or infinite.
    """

    def __init__(
        self,
        config: Any,  # gptgen.loading.config.EngineConfig (not imported: gptgen.loading imports this module)
        tensors: dict[str, tuple[npt.NDArray[np.uint8], str, list[int], str]],
        threads: int = 0,
        name: str = "the model",
    ) -> None: ...
    @property
    def threads(self) -> int: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    def new_session(self, max_seq: int) -> Session: ...
    def read_bandwidth(self, megabytes: int = 512, rounds: int = 3) -> float:
        """Read bandwidth in bytes per second: the engine's threads stream their shares of a
        buffer of `megabytes` (best of `rounds` timed reads after an untimed one). Decode reads
        every weight once per token, so this over the weights' size is its ceiling."""
    def forward_batch(
        self,
        sessions: list[Session],
        tokens: list[list[int]],
        all_logits: bool = False,
        stepwise: bool = False,
        within: list[tuple[int, int]] | None = None,
    ) -> npt.NDArray[np.float32]:
        """Runs tokens[i] at the next positions of sessions[i] in one pass (weights read once).
        Logits: every row if all_logits, else [len(sessions), n_vocab], the last row of each.
        stepwise: every row summed as a pass of that row alone sums it, so each row's logits
        equal those of running the tokens one at a time (else a session's rows are summed as
        llama.cpp sums a batch of them, which can differ in the last bits). within[i] = (of,
        first): session i's rows summed as rows first.. of a pass of `of` rows (at most
        PASS_ROWS), so that a prompt run in pieces gets the logits of one pass of it."""

class Session:
    """One sequence: a KV cache of max_seq positions."""

    def forward(self, tokens: list[int], all_logits: bool = False, stepwise: bool = False) -> npt.NDArray[np.float32]:
        """Logits [len(tokens), n_vocab] if all_logits, else [1, n_vocab] for the last token
        (stepwise: as Engine.forward_batch)."""
    @property
    def pos(self) -> int: ...
    @property
    def max_seq(self) -> int: ...
    def rewind(self, pos: int) -> None:
        """Forgets every position from `pos` on (from 0 where a sliding window's ring no
        longer holds what `pos` needs; `pos` then says where the session stands)."""
