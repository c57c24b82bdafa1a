"""The OpenAI API's request bodies as pydantic models, and what gptgen makes of them: the
GenerateOptions of a request (its sampling fields over the model's defaults, as `gptgen
generate` takes them) and its prompt as token ids.

Fields OpenAI documents are checked as OpenAI checks them (type and range; a wrong one is a 400
naming the field); fields it does not know are ignored, as it ignores them. gptgen's own
sampling fields (top_k, min_p, typical_p, repetition_penalty, no_repeat_ngram_size, ignore_eos)
are taken as extra body fields, as vLLM takes them.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ..errors import GptgenError
from ..options import GenerateOptions, SamplingParams

# The most choices one request may ask for (OpenAI's limit for n).
MAX_CHOICES = 128
# The most alternatives reported per token (OpenAI's top_logprobs limit).
MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 16

Number = Union[StrictInt, StrictFloat]


class ApiError(GptgenError):
    """A request the server refuses: its HTTP status, and OpenAI's error type, code and param."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.type, self.code, self.param = status, type, code, param


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class _Strict(BaseModel):
    # Wrong types are refused (no "5" for 5); unknown fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class CommonFields(_Strict):
    """The fields both endpoints take."""

    model: Optional[StrictStr] = None
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    max_tokens: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    temperature: Optional[Annotated[Number, Field(ge=0, le=2)]] = None
    top_p: Optional[Annotated[Number, Field(gt=0, le=1)]] = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_CHOICES)] = 1
    stop: Optional[Union[StrictStr, Annotated[list[StrictStr], Field(max_length=MAX_STOP_STRINGS)]]] = None
    seed: Optional[StrictInt] = None
    presence_penalty: Optional[Annotated[Number, Field(ge=-2, le=2)]] = None
    frequency_penalty: Optional[Annotated[Number, Field(ge=-2, le=2)]] = None
    logit_bias: Optional[dict[StrictStr, Annotated[Number, Field(ge=-100, le=100)]]] = None
    user: Optional[StrictStr] = None
    # gptgen's own (as vLLM's extra sampling parameters).
    top_k: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    min_p: Optional[Annotated[Number, Field(ge=0, le=1)]] = None
    typical_p: Optional[Annotated[Number, Field(gt=0, le=1)]] = None
    repetition_penalty: Optional[Annotated[Number, Field(gt=0)]] = None
    repeat_last_n: Optional[Annotated[StrictInt, Field(ge=-1)]] = None
    no_repeat_ngram_size: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    ignore_eos: StrictBool = False

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def wanted_tokens(self) -> int | None:
        """The new tokens asked for (None: the endpoint's default)."""
        return self.max_tokens

    def options(self, n_vocab: int, max_tokens: int | None, top_logprobs: int) -> GenerateOptions:
        """The request as `gptgen generate` would take it (seed: choice 0's)."""
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                token = int(key)
            except ValueError:
                raise bad_request(f"logit_bias keys are token ids, not {key!r}", "logit_bias") from None
            if not 0 <= token < n_vocab:
                raise bad_request(f"logit_bias: token {token} is outside the vocabulary of {n_vocab}", "logit_bias")
            # OpenAI's -100 bans the token outright.
            bias[token] = -math.inf if value <= -100 else float(value)
        if self.seed is not None and self.seed < -1:
            raise bad_request(f"seed must be >= 0 (or -1: a random one), not {self.seed}", "seed")
        values = {name: getattr(self, name) for name in SamplingParams.names() if name not in ("logit_bias", "seed")}
        try:
            sampling = SamplingParams(
                **{k: v for k, v in values.items() if v is not None},
                logit_bias=bias or None,
                seed=None if self.seed in (None, -1) else self.seed,
            )
        except GptgenError as e:
            raise bad_request(str(e)) from None
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerateOptions(max_tokens=max_tokens, sampling=sampling, stop=stop, ignore_eos=self.ignore_eos, top_logprobs=top_logprobs)


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[StrictStr, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(CommonFields):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Optional[Annotated[StrictInt, Field(ge=0)]] = None
    logprobs: StrictBool = False
    top_logprobs: Optional[Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)]] = None

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages as chat templates take them (OpenAI's "developer" is the system role)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def wanted_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def top_k_logprobs(self) -> int | None:
        """None: no logprobs; else the alternatives per token."""
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None


PromptInput = Union[StrictStr, Annotated[list[StrictStr], Field(min_length=1)], Annotated[list[StrictInt], Field(min_length=1)], Annotated[list[Annotated[list[StrictInt], Field(min_length=1)]], Field(min_length=1)]]


class CompletionRequest(CommonFields):
    prompt: PromptInput
    echo: StrictBool = False
    logprobs: Optional[Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)]] = None

    def prompts(self) -> list[Union[str, list[int]]]:
        """Each prompt: a text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # one prompt of token ids
        return list(p)
