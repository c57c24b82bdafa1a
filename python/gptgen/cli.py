"""The `gptgen` command line: a thin Typer layer over the library.

stdout carries only what the user asked for (generated text, JSON, ids, tables); diagnostics
go to stderr. Problems the user can fix end in one `error:` line and exit status 1.
Heavy modules (numpy, tokenizers, the engine) are imported inside commands, so `--help` and
argument errors are fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import typer

from .errors import GptgenError

app = typer.Typer(
    name="gptgen",
    help="Fast CPU text generation with GPT-family language models.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ModelOption = typer.Option(None, "--model", "-m", help="Model: a checkpoint directory. Default: $GPTGEN_MODEL.")
ThreadsOption = typer.Option(None, "--threads", help="Worker threads (default: one per physical core).", min=1)


def _read_prompt(prompt: Optional[str]) -> str:
    """The argument, or stdin when it is omitted or '-' (one trailing newline dropped, as
    `echo` adds it)."""
    if prompt is not None and prompt != "-":
        return prompt
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@app.command()
def generate(
    prompt: Optional[str] = typer.Argument(None, help="Prompt text; omit or '-' to read stdin."),
    model: Optional[str] = ModelOption,
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", "-n", help="Tokens to generate (default: 128, or what the context has room for)."
    ),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", "-t", help="Sampling temperature; 0 is greedy. Default: the model's own."
    ),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample from the k most likely tokens (0: all)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample from the smallest set reaching this probability."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed, for reproducible sampling."),
    threads: Optional[int] = ThreadsOption,
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="Keep generating past the end-of-sequence token."),
    logprobs: int = typer.Option(0, "--logprobs", help="Report the K most likely tokens at each step (with --json).", min=0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming text."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Timings and details on stderr."),
) -> None:
    """Generate a continuation of PROMPT."""
    from .generate import Generation, GenerationRequest, generate as run_generation
    from .model import Model
    from .sampling import SamplingParams

    text = _read_prompt(prompt)
    overrides = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    SamplingParams(**{k: v for k, v in overrides.items() if v is not None}).validate()  # fail before loading
    load_start = time.perf_counter()
    m = Model.load(model, threads)
    sampling = m.spec.sampling_defaults.with_overrides(**overrides)
    if verbose:
        _log(f"loaded {m.spec.path} ({m.spec.arch}, {m.engine.threads} threads) in {time.perf_counter() - load_start:.2f} s")
    ids = m.tokenizer.encode(text)
    if not ids and m.tokenizer.bos_id is not None:
        ids = [m.tokenizer.bos_id]  # unconditional generation starts from BOS, as in GPT-2's samples
    request = GenerationRequest(
        prompt_tokens=ids, max_tokens=max_tokens, sampling=sampling, ignore_eos=ignore_eos, top_logprobs=logprobs
    )
    if as_json:
        result = run_generation(m, request)
        sys.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")
        timings = result.timings
    else:
        run = Generation(m, request)
        for event in run:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        sys.stdout.write(run.final_text())
        if sys.stdout.isatty():
            sys.stdout.write("\n")
        sys.stdout.flush()
        timings = run.timings
    if verbose:
        t = timings.as_dict()
        _log(
            f"prompt {timings.prefill_tokens} tokens in {t['prefill_s']:.3f} s ({t['prefill_tok_s']:.1f} tok/s); "
            f"decode {timings.decode_tokens} tokens in {t['decode_s']:.3f} s ({t['decode_tok_s']:.1f} tok/s)"
        )


@app.command()
def tokenize(
    text: str = typer.Argument(..., help="Text to tokenize; '-' reads stdin."),
    model: Optional[str] = ModelOption,
) -> None:
    """Print the token ids of TEXT as a JSON list."""
    from .model import load_spec, load_tokenizer, resolve_model_path

    path = resolve_model_path(model)
    tokenizer = load_tokenizer(path, load_spec(path))
    print(json.dumps(tokenizer.encode(_read_prompt(text))))


@app.command()
def info(model: Optional[str] = ModelOption, threads: Optional[int] = ThreadsOption) -> None:
    """Describe a model: architecture, sizes, storage types, parameter count."""
    from rich.console import Console
    from rich.table import Table

    from . import _native
    from .model import Model

    m = Model.load(model, threads)
    spec, cfg = m.spec, m.spec.config
    table = Table(title=str(spec.path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("architecture", spec.arch),
        ("format", spec.format),
        ("parameters", f"{spec.n_params:,}"),
        ("tensor types", ", ".join(f"{k}: {v}" for k, v in sorted(spec.dtype_counts().items()))),
        ("vocabulary", str(cfg["n_vocab"])),
        ("context", str(cfg["n_ctx"])),
        ("embedding", str(cfg["n_embd"])),
        ("layers", str(cfg["n_layer"])),
        ("heads", f"{cfg['n_head']} (kv {cfg['n_kv_head']})"),
        ("feed-forward", str(cfg["n_ff"])),
        ("norm epsilon", f"{cfg['norm_eps']:g}"),
        ("eos / bos ids", f"{m.tokenizer.eos_ids} / {m.tokenizer.bos_id}"),
        ("kernels", f"{_native.kernel_name()}, {m.engine.threads} threads"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    Console().print(table)


def main() -> None:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")  # generated text is UTF-8 whatever the locale
    try:
        app()
    except GptgenError as e:
        _log(f"error: {e}")
        sys.exit(1)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's shutdown flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.exit(130)


if __name__ == "__main__":
    main()
