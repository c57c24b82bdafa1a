"""The Python API's options: what a caller (or the CLI) asks of one generation, before it is
resolved against a model's defaults and tokenizer into a GenerationRequest."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Iterator

from .errors import GptgenError

if TYPE_CHECKING:
    from .generate import Generation, GenerationRequest
    from .model import Model

# GenerateOptions fields that are sampling parameters (SamplingParams names).
SAMPLING_KEYS = {
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "repeat_last_n",
    "no_repeat_ngram_size",
    "logit_bias",
    "seed",
}


@dataclass(frozen=True)
class GenerateOptions:
    """max_tokens: new tokens (default 128 or what the context holds); max_length: prompt plus
    new tokens (Hugging Face's meaning), exclusive with max_tokens; sampling: overrides of the
    model's own sampling defaults, by SamplingParams name; stop: strings that end generation."""

    max_tokens: int | None = None
    max_length: int | None = None
    sampling: dict = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    truncate: bool = False
    top_logprobs: int = 0
    chat: bool = False
    system: str | None = None

    @classmethod
    def from_kwargs(cls, **kwargs) -> "GenerateOptions":
        """Options from keyword arguments, sampling parameters given flat (temperature=0)."""
        return cls().with_changes(**kwargs)

    def with_changes(self, **kwargs) -> "GenerateOptions":
        known = {f.name for f in fields(self)} - {"sampling"}
        sampling = dict(self.sampling)
        changes = {}
        for key, value in kwargs.items():
            if key in SAMPLING_KEYS:
                sampling[key] = value
            elif key in known:
                changes[key] = value
            else:
                raise GptgenError(f"unknown generation option {key!r}")
        return replace(self, sampling=sampling, **changes)

    def with_seed(self, seed: int | None) -> "GenerateOptions":
        return self if seed is None else self.with_changes(seed=seed)

    def request(self, model: "Model", prompt: str | list[dict[str, str]]) -> "GenerationRequest":
        """The request for `prompt` (text, or chat messages) on `model`."""
        from .chat import messages_for, render
        from .generate import GenerationRequest

        if isinstance(prompt, list):
            text = render(model.spec.chat_template, prompt, **model.special_strings())
        elif self.chat:
            text = render(model.spec.chat_template, messages_for(prompt, self.system), **model.special_strings())
        else:
            text = prompt
        ids = model.tokenizer.encode(text)
        if not ids and model.tokenizer.bos_id is not None:
            ids = [model.tokenizer.bos_id]  # unconditional generation starts from BOS, as in GPT-2's samples
        max_tokens = self.max_tokens
        if self.max_length is not None:
            if self.max_tokens is not None:
                raise GptgenError("give max_tokens or max_length, not both")
            max_tokens = self.max_length - len(ids)
            if max_tokens < 0:
                raise GptgenError(f"max_length {self.max_length} is shorter than the prompt ({len(ids)} tokens)")
        sampling = model.spec.sampling_defaults.with_overrides(**self.sampling)
        sampling.validate()
        return GenerationRequest(
            prompt_tokens=ids,
            max_tokens=max_tokens,
            sampling=sampling,
            ignore_eos=self.ignore_eos,
            top_logprobs=self.top_logprobs,
            stop=list(self.stop),
            truncate=self.truncate,
        )


class TextRun:
    """A generation in progress, read as text pieces: `pieces()` yields exactly the final text,
    split as it becomes safe to show."""

    def __init__(self, generation: "Generation"):
        self.generation = generation

    def pieces(self) -> Iterator[str]:
        for event in self.generation:
            if event.text:
                yield event.text
        tail = self.generation.final_text()
        if tail:
            yield tail

    @property
    def timings(self):
        return self.generation.timings

    @property
    def ends_at_context(self) -> bool:
        return self.generation.ends_at_context
