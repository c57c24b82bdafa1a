"""gptgen: fast CPU text generation for GPT-family language models.

    import gptgen
    model = gptgen.load("path/to/checkpoint")
    print(gptgen.generate(model, gptgen.GenerationRequest(model.tokenizer.encode("Hello"))).text)
"""

from .errors import GptgenError
from .generate import GenerationRequest, GenerationResult, generate
from .model import Model
from .sampling import SamplingParams

__version__ = "0.1.0"


def load(model: str, threads: int | None = None) -> Model:
    """Loads a model from a checkpoint directory."""
    return Model.load(model, threads)


__all__ = ["GenerationRequest", "GenerationResult", "GptgenError", "Model", "SamplingParams", "generate", "load"]
