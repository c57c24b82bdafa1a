"""Chat templates: the model's own Jinja template (from the GGUF or tokenizer_config.json),
rendered in a sandbox because templates come from untrusted files."""

from __future__ import annotations

from functools import lru_cache

from .errors import GptgenError

# A template longer than this is not a chat template.
MAX_TEMPLATE_CHARS = 100_000


class TemplateError(GptgenError):
    pass


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the chat template is {len(template)} characters; the limit is {MAX_TEMPLATE_CHARS}")

    def raise_exception(message: str):
        raise TemplateError(f"the chat template refused the conversation: {message}")

    # Hugging Face renders with trim_blocks and lstrip_blocks; templates are written for that.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateSyntaxError as e:
        raise TemplateError(f"the chat template does not parse: {e}") from None


def render(template: str | None, messages: list[dict[str, str]], *, bos_token: str = "", eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages` ([{"role", "content"}]) under `template`."""
    from jinja2 import TemplateError as JinjaError
    from jinja2.sandbox import SecurityError

    if not template:
        raise GptgenError("this model has no chat template")
    compiled = _compile(template)
    try:
        return compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token
        )
    except TemplateError:
        raise
    except SecurityError as e:
        raise TemplateError(f"the chat template tried something unsafe: {e}") from None
    except (JinjaError, TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as e:
        raise TemplateError(f"the chat template failed: {e}") from None


def messages_for(prompt: str, system: str | None) -> list[dict[str, str]]:
    """A single user turn, after an optional system message."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]
