"""gptgen: fast CPU text generation for GPT-family language models.

    import gptgen
    model = gptgen.load("smollm2-135m-instruct")
    print(model.generate("Once upon a time", max_tokens=32, temperature=0))
    for piece in model.stream("The capital of France is", max_tokens=16):
        print(piece, end="", flush=True)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import GptgenError

if TYPE_CHECKING:
    from .api import LanguageModel as Model
    from .generate import GenerationRequest, GenerationResult, generate
    from .options import GenerateOptions, SamplingParams

__version__ = "0.1.0"

# The public names, imported on first use: importing the package stays cheap and leaves NumPy
# unloaded until needed (the CLI sets up its environment first). name: (module, attribute).
_LAZY = {
    "GenerateOptions": ("options", "GenerateOptions"),
    "GenerationRequest": ("generate", "GenerationRequest"),
    "GenerationResult": ("generate", "GenerationResult"),
    "generate": ("generate", "generate"),
    # What load returns: a model.Model (weights, tokenizer, engine) with the generation methods.
    "Model": ("api", "LanguageModel"),
    "SamplingParams": ("options", "SamplingParams"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # found directly from now on
    return value


def load(model: str | None = None, threads: int | None = None) -> Model:
    """Loads a model: a .gguf file, a checkpoint directory, a known name such as
    "smollm2-135m-instruct", or a Hugging Face repo id. None: $GPTGEN_MODEL or the default."""
    from .api import LanguageModel

    return LanguageModel.load(model, threads)


__all__ = ["GenerateOptions", "GenerationRequest", "GenerationResult", "GptgenError", "Model", "SamplingParams", "generate", "load"]
