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
from pathlib import Path
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

ModelOption = typer.Option(
    None,
    "--model",
    "-m",
    help="A .gguf file, a checkpoint directory, a known name, or a Hugging Face repo id. "
    "Default: $GPTGEN_MODEL, else smollm2-135m-instruct.",
)
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


def _load(model: Optional[str], threads: Optional[int], verbose: bool = False):
    from .model import Model

    start = time.perf_counter()
    m = Model.load(model, threads, log=_log)
    if verbose:
        _log(f"loaded {m.spec.path} ({m.spec.arch}, {m.engine.threads} threads) in {time.perf_counter() - start:.2f} s")
    return m


def _prompt_ids(m, text: str, chat: bool, system: Optional[str]) -> list[int]:
    from .chat import messages_for, render

    if chat:
        text = render(m.spec.chat_template, messages_for(text, system), **_special_strings(m))
    ids = m.tokenizer.encode(text)
    if not ids and m.tokenizer.bos_id is not None:
        ids = [m.tokenizer.bos_id]  # unconditional generation starts from BOS, as in GPT-2's samples
    return ids


def _special_strings(m) -> dict[str, str]:
    t = m.tokenizer
    name = lambda i: t.backend.id_to_token(i) if i is not None else ""  # noqa: E731
    return {"bos_token": name(t.bos_id), "eos_token": name(t.eos_ids[0] if t.eos_ids else None)}


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
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt as a user message in the model's chat template."),
    system: Optional[str] = typer.Option(None, "--system", help="System message (with --chat)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Timings and details on stderr."),
) -> None:
    """Generate a continuation of PROMPT."""
    from .generate import Generation, GenerationRequest, generate as run_generation
    from .sampling import SamplingParams

    text = _read_prompt(prompt)
    overrides = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    SamplingParams(**{k: v for k, v in overrides.items() if v is not None}).validate()  # fail before loading
    m = _load(model, threads, verbose)
    sampling = m.spec.sampling_defaults.with_overrides(**overrides)
    request = GenerationRequest(
        prompt_tokens=_prompt_ids(m, text, chat or system is not None, system),
        max_tokens=max_tokens,
        sampling=sampling,
        ignore_eos=ignore_eos,
        top_logprobs=logprobs,
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
        _log_timings(timings)


def _log_timings(timings) -> None:
    t = timings.as_dict()
    _log(
        f"prompt {timings.prefill_tokens} tokens in {t['prefill_s']:.3f} s ({t['prefill_tok_s']:.1f} tok/s); "
        f"decode {timings.decode_tokens} tokens in {t['decode_s']:.3f} s ({t['decode_tok_s']:.1f} tok/s)"
    )


@app.command()
def chat(
    model: Optional[str] = ModelOption,
    system: Optional[str] = typer.Option(None, "--system", help="System message."),
    max_tokens: int = typer.Option(512, "--max-tokens", "-n", help="Most tokens per reply."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", help="Sampling temperature; 0 is greedy."),
    top_k: Optional[int] = typer.Option(None, "--top-k"),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    threads: Optional[int] = ThreadsOption,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Talk with the model, turn by turn (one line a message; Ctrl-D or /exit ends)."""
    from .chat import render
    from .generate import Conversation, Generation, GenerationRequest

    overrides = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    m = _load(model, threads, verbose)
    sampling = m.spec.sampling_defaults.with_overrides(**overrides)
    sampling.validate()
    conversation = Conversation(m)
    messages = [{"role": "system", "content": system}] if system else []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            break
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.rstrip("\n")})
        ids = m.tokenizer.encode(render(m.spec.chat_template, messages, **_special_strings(m)))
        room = m.n_ctx - len(ids)
        if room <= 0:
            raise GptgenError(f"the conversation ({len(ids)} tokens) no longer fits the context of {m.n_ctx}")
        run = Generation(m, GenerationRequest(ids, min(max_tokens, room), sampling), conversation)
        reply = []
        for event in run:
            reply.append(event.text)
            sys.stdout.write(event.text)
            sys.stdout.flush()
        reply.append(run.final_text())
        sys.stdout.write(reply[-1] + "\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})
        if verbose:
            _log_timings(run.timings)


@app.command()
def tokenize(
    text: str = typer.Argument(..., help="Text to tokenize; '-' reads stdin."),
    model: Optional[str] = ModelOption,
) -> None:
    """Print the token ids of TEXT as a JSON list."""
    from .model import load_files
    from .models import resolve

    _, tokenizer = load_files(resolve(model, log=_log))
    print(json.dumps(tokenizer.encode(_read_prompt(text))))


@app.command()
def perplexity(
    file: Path = typer.Argument(..., help="A UTF-8 text file."),
    model: Optional[str] = ModelOption,
    ctx: int = typer.Option(512, "--ctx", "-c", help="Tokens per chunk (llama-perplexity's -c)."),
    threads: Optional[int] = ThreadsOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Perplexity of FILE by llama.cpp's method: chunks of --ctx tokens, second halves scored."""
    from .perplexity import perplexity as run_perplexity

    try:
        text = file.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise GptgenError(f"cannot read {file}: {e.strerror or e}") from None
    result = run_perplexity(_load(model, threads), text, ctx)
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"PPL = {result.ppl:.4f} +/- {result.ppl_stderr:.4f} ({result.chunks} chunks of {result.n_ctx}, {result.scored} tokens scored)")


@app.command()
def pull(name: str = typer.Argument("smollm2-135m-instruct", help="A known model name.")) -> None:
    """Download a known model into the cache (verified, then moved into place)."""
    from .models import REGISTRY, cached_file
    from .models import pull as pull_model

    known = REGISTRY.get(name.lower())
    if known is None:
        raise GptgenError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    target = cached_file(known)
    if target.is_file():
        _log(f"{known.name} is already in the cache")
    else:
        target = pull_model(known)
    print(target)


@app.command()
def models() -> None:
    """List the models in the cache."""
    from rich.console import Console
    from rich.table import Table

    from .models import cached_models, models_dir

    table = Table(title=str(models_dir()))
    for column in ("name", "file", "size"):
        table.add_column(column)
    for name, path, size in cached_models():
        table.add_row(name, path.name, f"{size / 1e6:.1f} MB")
    Console().print(table)


@app.command()
def info(model: Optional[str] = ModelOption, threads: Optional[int] = ThreadsOption) -> None:
    """Describe a model: architecture, sizes, storage types, parameter count."""
    from rich.console import Console
    from rich.table import Table

    from . import _native

    m = _load(model, threads)
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
        ("heads", f"{cfg['n_head']} (kv {cfg['n_kv_head']}, dim {cfg['head_dim']})"),
        ("feed-forward", str(cfg["n_ff"])),
        ("norm epsilon", f"{cfg['norm_eps']:g}"),
        ("rope", f"base {cfg['rope_base']:g}, {cfg['rope_dims']} dims, {cfg['rope_pairing']} pairs" if "rope_base" in cfg else "none"),
        ("kv cache", str(cfg["kv_cache"])),
        ("eos / bos ids", f"{m.tokenizer.eos_ids} / {m.tokenizer.bos_id}"),
        ("chat template", "yes" if spec.chat_template else "no"),
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
