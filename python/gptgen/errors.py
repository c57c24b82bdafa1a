"""The exceptions gptgen raises for problems a user can act on: GptgenError, and EngineError
for what the engine refuses.

The CLI prints their message as a single line on stderr and exits with status 1; anything else
escaping is a bug in gptgen.
"""


class GptgenError(Exception):
    """A problem with the user's input, files or environment, with a message that says what."""


class EngineError(GptgenError, ValueError):
    """The engine (gptgen._native) refused its input or found its output broken: sizes that
    disagree, a buffer it cannot read, NaN logits. A ValueError too, for callers of the
    boundary that catch that."""
