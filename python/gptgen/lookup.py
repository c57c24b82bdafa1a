"""Prompt-lookup drafting (as transformers' `prompt_lookup_num_tokens` and llama.cpp's
`llama-lookup`): when the last few tokens of a sequence occurred before in it, the tokens that
followed them then are a guess at what comes next. Output that copies its input (summaries,
code edits, quotes) is often right for several tokens in a row, and checking a guess of k
tokens costs one forward pass of k + 1 rows instead of k + 1 passes of one row.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# n-gram lengths matched, longest first: a single token recurs too often to predict much.
NGRAM_SIZES = (3, 2)


def lookup_draft(sequence: list[int], most: int) -> list[int]:
    """Up to `most` tokens that followed the latest earlier occurrence of the sequence's last
    n-gram (the longest n in NGRAM_SIZES that occurred); [] when none did."""
    if most <= 0:
        return []
    tokens = np.asarray(sequence)
    for n in NGRAM_SIZES:
        if len(tokens) <= n:
            continue
        # Every earlier window of n tokens (the last one is the n-gram itself).
        windows = sliding_window_view(tokens[:-1], n)
        found = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
        if found.size:
            start = int(found[-1]) + n
            return tokens[start : start + most].tolist()
    return []


class DraftLength:
    """How many tokens to draft for the next pass, from what drafting has been worth so far:
    each draft token costs a row of the pass, and pays only if the model agrees with it.

    Two estimates, both weighted towards the recent passes: p, the chance that the model
    agrees with a draft token given it agreed with the ones before (agreements over
    agreements plus refusals), and a pass's time as a + b * rows (fitted on the timed passes;
    before two row counts have been timed, b = PRIOR_ROW_COST * a). A draft of k tokens gives
    1 + p + ... + p^k tokens on average for a + b * (k + 1) seconds; the k with the most
    tokens per second is chosen if it promises MARGIN more than no draft (the estimates are
    rough, and a draft that does not pay costs). With no draft chosen, one token is still
    drafted every PROBE_EVERY passes, so that p can rise again where the text starts to repeat.
    """

    # A second row costs about half a one-row pass on the default model (measured: 4 -> 6 ms
    # near the start of a sequence, 8.4 -> 11-12 ms at 600 tokens).
    PRIOR_ROW_COST = 0.5
    MARGIN = 1.1
    PROBE_EVERY = 16
    DECAY = 0.9

    def __init__(self, most: int):
        self.most = most
        # Decayed agreements and refusals (Laplace's rule starts p at 1/2).
        self.agreed = 0.0
        self.refused = 0.0
        # Decayed sums for the least-squares fit of seconds on rows.
        self.fit = np.zeros(5)  # weight, rows, rows^2, seconds, rows * seconds
        self.passes_without = 0

    def choose(self) -> int:
        p = (self.agreed + 1) / (self.agreed + self.refused + 2)
        a, b = self._cost()
        tokens = np.cumsum(p ** np.arange(self.most + 1))  # tokens[k]: 1 + p + ... + p^k
        rate = tokens / (a + b * (np.arange(self.most + 1) + 1))
        best = int(np.argmax(rate))
        if rate[best] < self.MARGIN * rate[0]:
            best = 0
        if best == 0:
            self.passes_without += 1
            if self.passes_without >= self.PROBE_EVERY:
                self.passes_without = 0
                return min(1, self.most)
        return best

    def observe(self, drafted: int, agreed: int, rows: int, seconds: float | None) -> None:
        """A pass of `rows` rows took `seconds` (None: not timed alone, as in a batch); of its
        `drafted` draft tokens the model agreed with the first `agreed`."""
        if drafted:
            self.agreed = self.agreed * self.DECAY + agreed
            self.refused = self.refused * self.DECAY + (agreed < drafted)
        if seconds is not None:
            self.fit = self.fit * self.DECAY + np.array([1.0, rows, rows * rows, seconds, rows * seconds])

    def _cost(self) -> tuple[float, float]:
        """(a, b) of a pass's seconds = a + b * rows, in any unit (only their ratio matters)."""
        w, x, xx, y, xy = self.fit
        spread = w * xx - x * x
        if w > 0 and spread > 1e-9 * w * w:
            b = (w * xy - x * y) / spread
            a = (y - b * x) / w
            if a > 0 and b > 0:
                return a, b
        return 1.0, self.PRIOR_ROW_COST
