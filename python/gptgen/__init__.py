"""gptgen: fast CPU text generation for GPT-family language models.

    import gptgen
    model = gptgen.load("smollm2-135m-instruct")
    print(model.generate("Once upon a time", max_tokens=32, temperature=0))
    for piece in model.stream("The capital of France is", max_tokens=16):
        print(piece, end="", flush=True)
"""

from .api import GenerateOptions
from .errors import GptgenError
from .generate import GenerationRequest, GenerationResult, generate
from .model import Model
from .sampling import SamplingParams

__version__ = "0.1.0"


def load(model: str | None = None, threads: int | None = None) -> Model:
    """Loads a model: a .gguf file, a checkpoint directory, a known name such as
    "smollm2-135m-instruct", or a Hugging Face repo id. None: $GPTGEN_MODEL or the default."""
    return Model.load(model, threads)


__all__ = ["GenerateOptions", "GenerationRequest", "GenerationResult", "GptgenError", "Model", "SamplingParams", "generate", "load"]
