"""The Python API: `LanguageModel`, what `gptgen.load` returns (and `gptgen.Model`), a loaded
Model with generation methods. Each method turns its arguments into GenerateOptions, those and
the prompt into a GenerationRequest (session.py), and runs it (generate.py)."""

from __future__ import annotations

from typing import Any, Iterator

from .generate import Generation, GenerationRequest, GenerationResult, Progress, TextRun, generate, generate_batch
from .model import Model
from .options import GenerateOptions
from .session import ChatSession, Prompt, build_request

__all__ = ["GenerateOptions", "LanguageModel"]


def _options(options: GenerateOptions | None, kwargs: dict[str, Any]) -> GenerateOptions:
    return (options or GenerateOptions()).with_changes(**kwargs)


class LanguageModel(Model):
    """A loaded model with the generation methods. Keyword arguments: GenerateOptions fields
    and SamplingParams names (max_tokens=32, temperature=0, stop=["\\n"], ...), applied over
    `options` when given."""

    def request(self, prompt: Prompt, *, options: GenerateOptions | None = None, **kwargs: Any) -> GenerationRequest:
        """The GenerationRequest for `prompt` (text, or chat messages [{"role", "content"}])."""
        return build_request(self, prompt, _options(options, kwargs))

    def start(self, prompt: Prompt, *, options: GenerateOptions | None = None, progress: Progress | None = None, **kwargs: Any) -> TextRun:
        """A TextRun for `prompt`: its pieces() are the text as it is generated; `progress(done,
        total)` hears of a long prompt's passes (tokens run so far)."""
        return TextRun(Generation(self, self.request(prompt, options=options, **kwargs), progress=progress))

    def generate(self, prompt: Prompt, *, options: GenerateOptions | None = None, **kwargs: Any) -> GenerationResult:
        """Generates from `prompt` (text, or chat messages) and returns a GenerationResult
        (str() of it is the text)."""
        return generate(self, self.request(prompt, options=options, **kwargs))

    def stream(self, prompt: Prompt, *, options: GenerateOptions | None = None, **kwargs: Any) -> Iterator[str]:
        """Yields the generated text in pieces as it is produced."""
        yield from self.start(prompt, options=options, **kwargs).pieces()

    def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> GenerationResult:
        """One assistant reply to `messages`, rendered with the model's chat template."""
        return self.generate(list(messages), **kwargs)

    def chat_session(self, *, options: GenerateOptions | None = None, **kwargs: Any) -> ChatSession:
        """A conversation held one reply at a time (system=... starts it with a system message)."""
        return ChatSession(self, _options(options, kwargs))

    def generate_batch(self, prompts: list[Prompt], *, options: GenerateOptions | None = None, **kwargs: Any) -> list[GenerationResult]:
        """Generates from every prompt together (one forward pass per step for all of them) and
        returns the GenerationResults in order. With greedy decoding the tokens are the same as
        separate `generate` calls give; a seed s gives prompt i the seed s + i."""
        options = _options(options, kwargs)
        seed = options.sampling.seed
        requests = [build_request(self, p, options.with_seed(None if seed is None else seed + i)) for i, p in enumerate(prompts)]
        results: list[GenerationResult | None] = [None] * len(requests)
        for i, result in generate_batch(self, requests):
            results[i] = result
        return results  # type: ignore[return-value]
