"""What a caller asks of a generation, as plain data: `SamplingParams`, the one definition of
the sampling parameters, and `GenerateOptions`, everything else a request may set.

`SamplingParams` is the schema the rest of gptgen reads: the CLI builds its sampling options
from the fields' metadata (flags, help), the `--jsonl` keys are its fields, the Python API's
keyword arguments are its field names, and a model's generation defaults are one. Every field
is optional: None means "not set here", and resolving fills it from beneath (the model's
defaults, then llama.cpp's, the `default` in each field's metadata). An instance is checked
when it is made, so one that exists is valid.

No NumPy here: the CLI imports this module before parsing its arguments.
"""

from __future__ import annotations

import functools
import math
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, get_args, get_type_hints

from .errors import GptgenError


def _param(default: Any, flags: tuple[str, ...], help: str, *, jsonl: bool = True) -> Any:
    """A sampling field: unset (None) unless given. `default` is llama.cpp's value, used when
    neither the caller nor the model sets one; `flags` and `help` make the CLI option; `jsonl`
    says whether a --jsonl line may set it."""
    return field(default=None, metadata={"default": default, "flags": flags, "help": help, "jsonl": jsonl})


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters, in the order the sampler applies them (see sampling.py).

    temperature 0 means greedy; top_k 0, top_p 1, min_p 0, typical_p 1, penalties 1 / 0 and
    no_repeat_ngram_size 0 mean "off"; repeat_last_n -1 means the whole sequence."""

    temperature: float | None = _param(
        0.8, ("--temperature", "--temp", "-t"), "Sampling temperature; 0 is greedy."
    )
    top_k: int | None = _param(40, ("--top-k",), "Sample from the k most likely tokens (0: all).")
    top_p: float | None = _param(0.95, ("--top-p",), "Sample from the smallest set reaching this probability.")
    min_p: float | None = _param(0.0, ("--min-p",), "Drop tokens less likely than this fraction of the best.")
    typical_p: float | None = _param(1.0, ("--typical-p",), "Locally typical sampling mass (1: off).")
    repetition_penalty: float | None = _param(
        1.0, ("--repetition-penalty", "--repeat-penalty"), "Penalise tokens seen in the window (Hugging Face semantics; 1: off)."
    )
    presence_penalty: float | None = _param(0.0, ("--presence-penalty",), "Subtract from tokens seen in the window (OpenAI).")
    frequency_penalty: float | None = _param(0.0, ("--frequency-penalty",), "Subtract per occurrence in the window (OpenAI).")
    repeat_last_n: int | None = _param(64, ("--repeat-last-n",), "Window of the penalties, in tokens (-1: all).")
    no_repeat_ngram_size: int | None = _param(0, ("--no-repeat-ngram-size",), "Never repeat an n-gram of this size (Hugging Face).")
    # {token id: value added to its logit}; -inf bans the token.
    logit_bias: dict[int, float] | None = _param(
        {}, ("--logit-bias",), "ID=VALUE added to that token's logit (repeatable; -inf bans it).", jsonl=False
    )
    seed: int | None = _param(None, ("--seed",), "Random seed, for reproducible sampling (-1: a random one, as in llama.cpp).")

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def fields(cls) -> tuple[Field, ...]:
        """The parameters' dataclass fields, in order (metadata: default, flags, help, jsonl)."""
        return fields(cls)

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def value_type(cls, name: str) -> type:
        """The type of a parameter's values (float, int or dict), from its annotation."""
        return _value_types()[name]

    def set_values(self) -> dict[str, Any]:
        """The parameters this instance sets."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def with_overrides(self, **values: Any) -> "SamplingParams":
        """These parameters with every value that is not None replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def over(self, beneath: "SamplingParams") -> "SamplingParams":
        """These parameters, and `beneath`'s where these are unset."""
        return beneath.with_overrides(**self.set_values())

    def resolved(self) -> "SamplingParams":
        """Every parameter set: the unset ones take llama.cpp's defaults."""
        return replace(self, **{f.name: _copy(f.metadata["default"]) for f in fields(self) if getattr(self, f.name) is None})

    def validate(self) -> None:
        """Refuses values the sampler cannot use (unset ones are not checked)."""
        for name, kind in _value_types().items():
            value = getattr(self, name)
            if kind is float and value is not None and not math.isfinite(value):
                raise GptgenError(f"{name.replace('_', '-')} must be a finite number, not {value}")
        _check(self.temperature, lambda v: v >= 0, "temperature must be a number >= 0")
        _check(self.top_k, lambda v: v >= 0, "top-k must be >= 0")
        _check(self.seed, lambda v: v >= 0, "seed must be >= 0 (or -1 on the command line: a random seed)")
        _check(self.top_p, lambda v: 0 < v <= 1, "top-p must be in (0, 1]")
        _check(self.min_p, lambda v: 0 <= v <= 1, "min-p must be in [0, 1]")
        _check(self.typical_p, lambda v: 0 < v <= 1, "typical-p must be in (0, 1]")
        _check(self.repetition_penalty, lambda v: v > 0, "repetition-penalty must be > 0")
        _check(self.repeat_last_n, lambda v: v >= -1, "repeat-last-n must be >= -1 (-1: the whole sequence)")
        _check(self.no_repeat_ngram_size, lambda v: v >= 0, "no-repeat-ngram-size must be >= 0")
        for token, bias in (self.logit_bias or {}).items():
            if not (math.isfinite(bias) or bias == -math.inf):
                raise GptgenError(f"the logit bias of token {token} must be a number or -inf, not {bias}")


@functools.cache
def _value_types() -> dict[str, type]:
    """Each sampling parameter's value type, in field order: `float | None` gives float."""
    types = {}
    for name, hint in get_type_hints(SamplingParams).items():
        kind = next(a for a in get_args(hint) if a is not type(None))
        types[name] = getattr(kind, "__origin__", kind)  # dict[int, float] gives dict
    return types


def _check(value: Any, ok: Any, message: str) -> None:
    if value is not None and not ok(value):
        raise GptgenError(f"{message}, not {value}")


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


# The most draft tokens prompt lookup checks in one pass.
MAX_LOOKUP = 64


@dataclass(frozen=True)
class GenerateOptions:
    """max_tokens: new tokens (default 128 or what the context holds); max_length: prompt plus
    new tokens (Hugging Face's meaning), exclusive with max_tokens; sampling: what the caller
    sets, over the model's own defaults; stop: strings that end generation; top_logprobs: the
    alternatives reported per token; chat: render the prompt as a user message with the model's
    chat template, after `system` if given; lookup: prompt-lookup decoding, checking up to this
    many tokens copied from earlier in the sequence per forward pass (the same tokens)."""

    max_tokens: int | None = None
    max_length: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    truncate: bool = False
    top_logprobs: int = 0
    # Prompt lookup: draft tokens checked per pass (0: off); see lookup.py.
    lookup: int = 0
    chat: bool = False
    system: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.lookup, int) or isinstance(self.lookup, bool) or not 0 <= self.lookup <= MAX_LOOKUP:
            raise GptgenError(f"lookup must be a whole number from 0 to {MAX_LOOKUP}, not {self.lookup!r}")
        if isinstance(self.sampling, dict):  # {name: value}, as GenerateOptions once took
            object.__setattr__(self, "sampling", _sampling(self.sampling))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "GenerateOptions":
        """Options from keyword arguments, sampling parameters given flat (temperature=0)."""
        return cls().with_changes(**kwargs)

    def with_changes(self, **kwargs: Any) -> "GenerateOptions":
        """These options with `kwargs` changed: GenerateOptions fields, and SamplingParams names
        (None unsets a sampling parameter)."""
        known = {f.name for f in fields(self)} - {"sampling"}
        sampling_names = SamplingParams.names()
        unknown = [key for key in kwargs if key not in known and key not in sampling_names]
        if unknown:
            raise GptgenError(f"unknown generation option {unknown[0]!r}")
        sampling = {k: v for k, v in kwargs.items() if k in sampling_names}
        changes = {k: v for k, v in kwargs.items() if k in known}
        if sampling:
            changes["sampling"] = replace(self.sampling, **sampling)
        return replace(self, **changes)

    def with_seed(self, seed: int | None) -> "GenerateOptions":
        return self if seed is None else self.with_changes(seed=seed)


def _sampling(values: dict[str, Any]) -> SamplingParams:
    unknown = [key for key in values if key not in SamplingParams.names()]
    if unknown:
        raise GptgenError(f"unknown generation option {unknown[0]!r}")
    return SamplingParams(**values)
