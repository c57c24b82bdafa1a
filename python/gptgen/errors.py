"""The one exception gptgen raises for problems a user can act on.

The CLI prints its message as a single line on stderr and exits with status 1; anything else
escaping is a bug in gptgen.
"""


class GptgenError(Exception):
    """A problem with the user's input, files or environment, with a message that says what."""
