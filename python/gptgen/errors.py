"""The exceptions gptgen raises for problems a user can act on: GptgenError, UsageError for a
command line that cannot run as given, and EngineError for what the engine refuses.

The CLI prints their message as a single line on stderr and exits with status 2 for usage
errors (as click does for an unknown option or a malformed number), 1 for every other error;
anything else escaping is a bug in gptgen.
"""


class GptgenError(Exception):
    """A problem with the user's input, files or environment, with a message that says what."""


class UsageError(GptgenError):
    """A command line that cannot run as given: an option value out of range or malformed, or
    options that exclude each other."""


class EngineError(GptgenError, ValueError):
    """The engine (gptgen._native) refused its input or found its output broken: sizes that
    disagree, a buffer it cannot read, NaN logits. A ValueError too, for callers of the
    boundary that catch that."""
