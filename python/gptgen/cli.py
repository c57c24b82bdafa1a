"""The `gptgen` command line: a thin Typer layer over the library.

stdout carries only what the user asked for (generated text, JSON, ids, tables); diagnostics
go to stderr. Problems the user can fix end in one `error:` line and exit status 1.
Heavy modules (numpy, tokenizers, the engine) are imported inside commands, so `--help` and
argument errors are fast.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

# gptgen makes no BLAS calls, but NumPy's OpenBLAS starts a thread per core when NumPy loads,
# and they spin for a while, competing with the engine's threads on small machines. Set before
# anything imports NumPy (the package's __init__ does not); a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer  # noqa: E402

from .errors import GptgenError, UsageError  # noqa: E402
from .options import GenerateOptions, SamplingParams  # noqa: E402  (no NumPy: --help stays fast)

app = typer.Typer(
    name="gptgen",
    help="Fast CPU text generation with GPT-family language models.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

def _flag(*names: str, help: str, panel: str | None = None) -> Any:
    """An on/off option: off unless given; shown in the help without a value label."""
    return typer.Option(False, *names, help=help, rich_help_panel=panel, metavar=" ")


ModelOption = typer.Option(
    None,
    "--model",
    "-m",
    rich_help_panel="Model",
    help="A .gguf file, a checkpoint directory, a known name, or a Hugging Face repo id. "
    "Default: $GPTGEN_MODEL, else smollm2-135m-instruct.",
)
ThreadsOption = typer.Option(None, "--threads", help="Worker threads. Default: one per physical core.", min=1, rich_help_panel="Model")


def _print_version(value: bool) -> None:
    if value:
        import platform

        from . import __version__, _native

        typer.echo(f"gptgen {__version__} (engine kernels: {_native.kernel_name()}; Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print the version, the engine's kernels and the Python version, and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Fast CPU text generation with GPT-family language models."""


def _read_prompt(prompt: Optional[str], allow_empty: bool = True) -> str:
    """The prompt: the argument, stdin when it is omitted or '-', or both (argument first, then
    a newline and stdin) when an argument is given and stdin is piped. One trailing newline of
    stdin is dropped, as `echo` adds it. Reading a terminal says so on stderr; a prompt read
    from stdin alone that comes out empty is an error unless `allow_empty`."""
    if prompt is not None and prompt != "-" and (sys.stdin is None or sys.stdin.isatty()):
        return prompt
    if prompt in (None, "-") and sys.stdin is not None and sys.stdin.isatty():
        _log("gptgen: reading the prompt from stdin (Ctrl-D to end)")
    piped = _read_stdin()
    if prompt is None or prompt == "-":
        if not piped and not allow_empty:
            raise GptgenError("the prompt from stdin is empty (give --allow-empty to start from the BOS token alone)")
        return piped
    return f"{prompt}\n{piped}" if piped else prompt


def _read_stdin() -> str:
    """All of stdin, invalid UTF-8 replaced with U+FFFD; one trailing newline dropped."""
    if sys.stdin is None or sys.stdin.closed:
        return ""
    text = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(model: Optional[str], threads: Optional[int], verbose: bool = False):
    """The model, with the Python API's generation methods (api.LanguageModel)."""
    from .api import LanguageModel

    _check_threads(threads)
    start = time.perf_counter()
    m = LanguageModel.load(model, threads, log=_log)
    if verbose:
        _log(f"loaded {m.spec.path} ({m.spec.arch}, {m.engine.threads} threads) in {time.perf_counter() - start:.2f} s")
    return m


def _check_threads(threads: Optional[int]) -> None:
    """A --threads value the engine would not start is a usage error."""
    from .model import check_threads

    try:
        check_threads(threads)
    except GptgenError as e:
        raise UsageError(str(e)) from None


def _parse_logit_bias(values: list[str]) -> dict[int, float]:
    bias = {}
    for item in values:
        token, sep, value = item.partition("=")
        try:
            bias[int(token)] = float(value) if value.strip().lower() not in ("-inf", "-infinity") else float("-inf")
        except ValueError:
            raise UsageError(f"--logit-bias takes ID=VALUE (e.g. 15496=-5 or 50256=-inf), not {item!r}") from None
        if not sep:
            raise UsageError(f"--logit-bias takes ID=VALUE, not {item!r}")
    return bias


def _seed(seed: int | None) -> int | None:
    """llama.cpp's convention: --seed -1 asks for a random seed, as giving none does."""
    return None if seed == -1 else seed


# The sampling parameters the command line takes other than as a plain optional number:
# name -> (option type, option default, the parameter's value from the option's).
_CLI_INPUT: dict[str, tuple[Any, Any, Callable[[Any], Any]]] = {
    "logit_bias": (list[str], [], lambda values: _parse_logit_bias(values) or None),
    "seed": (Optional[int], None, _seed),
}


# Sampling options listed under "Penalties" in the help; the others under "Sampling".
_PENALTIES = {"repetition_penalty", "presence_penalty", "frequency_penalty", "repeat_last_n", "no_repeat_ngram_size", "logit_bias"}


def _sampling_options(names: Sequence[str] | None = None, *, place: dict[str, str] | None = None):
    """Gives a command options for the sampling parameters (all, or `names`) made from the
    SamplingParams schema: flags and help from each field's metadata, under the Sampling or
    Penalties heading of the help, listed in schema order where the command has its `sampling`
    parameter (`place`: parameter -> the command's parameter it is listed before instead). The
    command receives one SamplingParams, `sampling`, made and so checked before the command
    runs."""
    chosen = [f for f in SamplingParams.fields() if names is None or f.name in names]
    place = place or {}

    def option(f) -> inspect.Parameter:
        kind, default, _ = _CLI_INPUT.get(f.name, (Optional[SamplingParams.value_type(f.name)], None, None))
        panel = "Penalties" if f.name in _PENALTIES else "Sampling"
        # Unset unless given: the help names what applies then (the model's, else llama.cpp's).
        fallback = f.metadata["default"]
        text = f.metadata["help"]
        if fallback is not None and not isinstance(fallback, dict):
            text += f" Default: the model's, else {fallback}." if f.name == "temperature" else f" Default: {fallback}."
        info = typer.Option(default, *f.metadata["flags"], help=text, rich_help_panel=panel, show_default=False)
        return inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info, annotation=kind)

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        options = [option(f) for f in chosen]
        parameters: list[inspect.Parameter] = []
        for p in inspect.signature(command, eval_str=True).parameters.values():
            parameters += [o for o in options if place.get(o.name) == p.name]
            parameters += [o for o in options if o.name not in place] if p.name == "sampling" else [p]

        @functools.wraps(command)
        def run(**values: Any) -> None:
            sampling = {f.name: values.pop(f.name) for f in chosen}
            for name, value in sampling.items():
                if name in _CLI_INPUT:
                    sampling[name] = _CLI_INPUT[name][2](value)
            try:
                params = SamplingParams(**sampling)
            except GptgenError as e:
                raise UsageError(str(e)) from None
            command(sampling=params, **values)

        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


# Keys a --jsonl record may set, besides "prompt", and their types.
JSONL_OPTIONS = {
    "max_tokens": int,
    **{f.name: SamplingParams.value_type(f.name) for f in SamplingParams.fields() if f.metadata["jsonl"]},
    "stop": list,
    "ignore_eos": bool,
    "lookup": int,
}


@app.command()
@_sampling_options(place={"seed": "num_return_sequences"})
def generate(
    prompt: Optional[str] = typer.Argument(None, help="Prompt text; omit or '-' to read stdin (piped stdin is appended to an argument)."),
    model: Optional[str] = ModelOption,
    max_tokens: Optional[int] = typer.Option(
        None, "--max-tokens", "-n", help="Tokens to generate. Default: 128, or what the context has room for.", rich_help_panel="Length"
    ),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Prompt plus new tokens, at most (Hugging Face's max_length).", rich_help_panel="Length"),
    sampling: SamplingParams = SamplingParams(),  # the sampling options (--temperature ... --seed)
    stop: list[str] = typer.Option(
        [], "--stop", help="End when the text contains this string, which is not printed (repeatable).", show_default=False, rich_help_panel="Length"
    ),
    num_return_sequences: int = typer.Option(
        1, "--num-return-sequences", help="Samples of the prompt, decoded together as a batch (seeds S, S+1, ...). Default: 1.", min=1,
        show_default=False, rich_help_panel="Batch",
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", help="Prompts decoded together with --each-line / --jsonl. Default: 8.", min=1, show_default=False, rich_help_panel="Batch"
    ),
    truncate: bool = _flag("--truncate", help="Keep the prompt's last tokens when it does not fit the context.", panel="Length"),
    each_line: bool = _flag("--each-line", help="One completion per line of stdin, written as JSONL in input order.", panel="Batch"),
    jsonl: bool = _flag("--jsonl", help='Like --each-line, each line a JSON object {"prompt": ..., options}.', panel="Batch"),
    threads: Optional[int] = ThreadsOption,
    ignore_eos: bool = _flag("--ignore-eos", help="Keep generating past the end-of-sequence token.", panel="Length"),
    logprobs: int = typer.Option(
        0, "--logprobs", help="Report the K most likely tokens at each step (with --json). Default: 0.", min=0, show_default=False, rich_help_panel="Output"
    ),
    as_json: bool = _flag("--json", help="Print one JSON object instead of streaming text.", panel="Output"),
    chat: bool = _flag("--chat", help="Wrap the prompt as a user message in the model's chat template.", panel="Prompt"),
    system: Optional[str] = typer.Option(None, "--system", help="System message (implies --chat).", rich_help_panel="Prompt"),
    verbose: bool = _flag("--verbose", "-v", help="Timings and details on stderr.", panel="Output"),
    allow_empty: bool = _flag("--allow-empty", help="Accept an empty prompt from stdin (generation starts from the BOS token).", panel="Prompt"),
    null: bool = _flag("--null", "-0", help="With --num-return-sequences: end each sample with a NUL byte instead of markers.", panel="Output"),
    quiet: bool = _flag("--quiet", "-q", help="No progress display on stderr (shown on a terminal for a long prompt).", panel="Output"),
    lookup: int = typer.Option(
        0, "--lookup", help="Prompt lookup: check up to N tokens copied from earlier in the text per forward pass; the output is the same. Default: 0 (off).",
        min=0, max=64, show_default=False, rich_help_panel="Speed",
    ),
) -> None:
    """Generate a continuation of PROMPT."""
    if max_tokens is not None and max_length is not None:
        raise UsageError("give --max-tokens or --max-length, not both")
    options = GenerateOptions(
        max_tokens=max_tokens,
        max_length=max_length,
        sampling=sampling,
        stop=list(stop),
        ignore_eos=ignore_eos,
        truncate=truncate,
        top_logprobs=logprobs,
        chat=chat or system is not None,
        system=system,
        lookup=lookup,
    )
    if each_line or jsonl:
        if prompt is not None:
            raise UsageError("--each-line and --jsonl read their prompts from stdin; give no PROMPT argument")
        _run_batch_lines(_load(model, threads, verbose), options, jsonl, batch_size)
        return
    text = _read_prompt(prompt, allow_empty)
    m = _load(model, threads, verbose)
    if num_return_sequences > 1:
        _print_samples(m, text, options, num_return_sequences, as_json, null, verbose)
    elif as_json:
        _print_json(m, text, options, verbose)
    else:
        _stream_text(m, text, options, verbose, quiet)


class _PromptProgress:
    """A progress bar on stderr while a long prompt runs, shown from its first pass on and gone
    once the prompt is done (before any text is written)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._bar is None:
            columns = (TextColumn("prompt"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"), TimeRemainingColumn())
            self._bar = Progress(*columns, console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("prompt", total=total)
        self._bar.update(self._task, completed=done)
        if done >= total:
            self._bar.stop()


def _progress_display(quiet: bool) -> Optional[_PromptProgress]:
    """The prompt's progress bar: on a terminal's stderr, unless --quiet."""
    return None if quiet or not sys.stderr.isatty() else _PromptProgress()


def _stream_text(m, text: str, options: GenerateOptions, verbose: bool, quiet: bool) -> None:
    """The generated text, written as it comes, then a newline."""
    run = m.start(text, options=options, progress=_progress_display(quiet))
    for piece in run.pieces():
        _write(piece)
    _write("\n")
    if run.ends_at_context:
        _log(f"gptgen: generation stopped at the end of the model's context ({m.n_ctx} tokens)")
    if verbose:
        _log_timings(run.timings)


def _print_json(m, text: str, options: GenerateOptions, verbose: bool) -> None:
    """--json: one JSON object."""
    result = m.generate(text, options=options)
    _write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")
    if verbose:
        _log_timings(result.timings)


def _print_samples(m, text: str, options: GenerateOptions, n: int, as_json: bool, null: bool, verbose: bool) -> None:
    """--num-return-sequences: n samples decoded as one batch: a JSON list; each sample ended by
    a NUL byte (--null); or the samples after one another, each after the first behind a blank
    line and its `--- i ---` marker, then a newline."""
    results = m.generate_batch([text] * n, options=options)
    if as_json:
        _write(json.dumps([r.as_dict() for r in results], ensure_ascii=False) + "\n")
    elif null:
        _write("".join(result.text + "\0" for result in results))
    else:
        _write("".join((f"\n\n--- {i} ---\n" if i > 1 else "") + result.text for i, result in enumerate(results, start=1)) + "\n")
    if verbose:
        _log_timings(results[0].timings)


class _ReaderGone(Exception):
    """stdout's reader went away (`| head`). Not an OSError, so that click does not turn it
    into its own exit status before main() can end the run quietly."""


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise _ReaderGone from None


def _write_record(record: dict) -> None:
    """One JSONL record, written whole: one write(2) of the encoded line, so a reader or a
    kill sees either all of it or none of it (a record over the pipe's capacity can still be
    cut by SIGKILL while the reader is not reading); Ctrl-C is held off until it is out (and
    then ends the run)."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    if hasattr(signal, "pthread_sigmask"):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
        while data:
            data = data[os.write(fd, data) :]
    except BrokenPipeError:
        raise _ReaderGone from None
    finally:
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run_batch_lines(m, options: GenerateOptions, jsonl: bool, batch_size: int) -> None:
    """One JSON record per input line, in input order, each written and flushed as soon as it
    and every line before it are done. Lines are decoded `batch_size` at a time as one batch;
    a bad line gives an error record and the rest still run."""
    from .generate import generate_batch, plan

    lines = (raw.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r") for raw in sys.stdin.buffer)
    index = 0
    while True:
        chunk = [line for _, line in zip(range(batch_size), lines)]
        if not chunk:
            return
        records: list[dict | None] = [None] * len(chunk)
        requests, slots = [], []
        for i, line in enumerate(chunk):
            record: dict = {"index": index + i}
            try:
                prompt, changes = _read_line(line, jsonl)
                record["prompt"] = prompt
                line_options = options.with_changes(**changes)  # checks the values
                request = m.request(prompt, options=line_options)
                plan(m, request)  # context errors belong to this line alone
                requests.append(request)
                slots.append((i, record, line_options.top_logprobs))
            except GptgenError as e:
                record["error"] = str(e)
                records[i] = record
        written = 0

        def flush_ready() -> None:
            nonlocal written
            while written < len(records) and records[written] is not None:
                _write_record(records[written])
                written += 1

        flush_ready()
        for k, result in generate_batch(m, requests):
            i, record, top_logprobs = slots[k]
            record.update({key: v for key, v in result.as_dict().items() if key != "logprobs" or top_logprobs})
            records[i] = record
            flush_ready()
        index += len(chunk)


def _read_line(line: str, jsonl: bool) -> tuple[str, dict[str, Any]]:
    """The line's prompt, and the options it sets (--jsonl) by name, each of its JSONL type."""
    if not jsonl:
        return line, {}
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise GptgenError(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise GptgenError('each line must be a JSON object with a string "prompt"')
    changes = {}
    for key, value in obj.items():
        if key == "prompt":
            continue
        kind = JSONL_OPTIONS.get(key)
        if kind is None:
            raise GptgenError(f"unknown option {key!r} (known: prompt, {', '.join(JSONL_OPTIONS)})")
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise GptgenError(f"option {key!r} must be {kind.__name__}, not {value!r}")
        changes[key] = value
    return obj["prompt"], changes


def _log_timings(timings) -> None:
    t = timings.as_dict()
    _log(
        f"prompt {timings.prefill_tokens} tokens in {t['prefill_s']:.3f} s ({t['prefill_tok_s']:.1f} tok/s); "
        f"decode {timings.decode_tokens} tokens in {t['decode_s']:.3f} s ({t['decode_tok_s']:.1f} tok/s)"
        + (f"; lookup: {timings.accepted} of {timings.drafted} draft tokens accepted" if timings.drafted else "")
    )


@app.command()
@_sampling_options(("temperature", "top_k", "top_p", "seed"))
def chat(
    model: Optional[str] = ModelOption,
    system: Optional[str] = typer.Option(None, "--system", help="System message.", rich_help_panel="Prompt"),
    max_tokens: int = typer.Option(512, "--max-tokens", "-n", help="Most tokens per reply. Default: 512.", show_default=False, rich_help_panel="Length"),
    sampling: SamplingParams = SamplingParams(),  # --temperature, --top-k, --top-p, --seed
    threads: Optional[int] = ThreadsOption,
    verbose: bool = _flag("--verbose", "-v", help="Timings and details on stderr.", panel="Output"),
) -> None:
    """Talk with the model, turn by turn. At a terminal: line editing and history, /help for
    the commands, \"\"\" for a message of several lines, Ctrl-C to stop a reply, Ctrl-D to quit.
    Piped: one message per line, one reply per message."""
    from .paths import chat_history_file
    from .repl import ChatLoop, piped_messages, terminal_messages

    options = GenerateOptions(max_tokens=max_tokens, sampling=sampling, system=system)
    m = _load(model, threads, verbose)
    session = m.chat_session(options=options)
    session.notice = lambda note: _log(f"({note})")

    def after_reply() -> None:
        if verbose and session.timings is not None:
            _log_timings(session.timings)

    loop = ChatLoop(session, _write, _log, after_reply)
    if sys.stdin.isatty():
        _log(f"gptgen chat: {m.spec.path.name}, context {m.n_ctx} tokens. /help for commands, Ctrl-D to quit.")
        loop.run(terminal_messages(chat_history_file(), _log))
    else:
        loop.run(piped_messages(sys.stdin))


@app.command()
def serve(
    model: Optional[str] = ModelOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface). Default: 127.0.0.1.", show_default=False),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0: a free one, printed). Default: 8080.", min=0, max=65535, show_default=False),
    threads: Optional[int] = ThreadsOption,
    parallel: int = typer.Option(8, "--parallel", "-np", help="Sequences decoded together, at most. Default: 8.", min=1, show_default=False),
    max_queue: int = typer.Option(
        64, "--max-queue", help="Sequences that may wait for a slot; more are refused with 429. Default: 64.", min=0, show_default=False
    ),
    ctx_size: Optional[int] = typer.Option(
        None, "--ctx-size", "-c", help="Tokens per sequence (prompt and reply). Default: the model's context.", min=1, show_default=False
    ),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="GPTGEN_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 (also $GPTGEN_API_KEY).", metavar="KEY",
        show_default=False,
    ),
    cors_origin: list[str] = typer.Option(
        [], "--cors-origin", help="Allow browser requests from this origin (repeatable; * for any).", metavar="ORIGIN", show_default=False
    ),
    verbose: bool = _flag("--verbose", "-v", help="Timings of each request on stderr."),
) -> None:
    r"""Serve the model over an OpenAI-compatible HTTP API (needs: pip install 'gptgen\[serve]')."""
    from .server import Settings
    from .server import serve as run_server

    _check_threads(threads)
    settings = Settings(
        model=model, threads=threads, parallel=parallel, max_queue=max_queue, ctx_size=ctx_size,
        api_key=api_key or None, cors_origins=list(cors_origin), verbose=verbose,
    )
    run_server(settings, host, port, _log)


@app.command()
def tokenize(
    text: str = typer.Argument(..., help="Text to tokenize; '-' reads stdin."),
    model: Optional[str] = ModelOption,
) -> None:
    """Print the token ids of TEXT as a JSON list."""
    from .model import load_files
    from .models import resolve

    _, tokenizer = load_files(resolve(model, log=_log))
    _write(json.dumps(tokenizer.encode(_read_prompt(text))) + "\n")


@app.command()
def perplexity(
    file: Path = typer.Argument(..., help="A UTF-8 text file."),
    model: Optional[str] = ModelOption,
    ctx: int = typer.Option(512, "--ctx", "-c", help="Tokens per chunk (llama-perplexity's -c)."),
    chunks: Optional[int] = typer.Option(None, "--chunks", help="Score only the first N chunks (llama-perplexity's --chunks)."),
    threads: Optional[int] = ThreadsOption,
    as_json: bool = _flag("--json", help="Print one JSON object."),
    quiet: bool = _flag("--quiet", "-q", help="No progress display on stderr (shown on a terminal)."),
) -> None:
    """Perplexity of FILE by llama.cpp's method: chunks of --ctx tokens, second halves scored."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .perplexity import perplexity as run_perplexity

    try:
        text = file.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise GptgenError(f"cannot read {file}: {e.strerror or e}") from None
    m = _load(model, threads)
    console = Console(stderr=True)
    # A progress line on a terminal only: stderr stays clean in pipes and logs.
    columns = (TextColumn("perplexity"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=quiet or not console.is_terminal) as bar:
        task = bar.add_task("chunks", total=None)
        result = run_perplexity(m, text, ctx, chunks, lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        _write(json.dumps(result.as_dict()) + "\n")
    else:
        _write(f"PPL = {result.ppl:.4f} +/- {result.ppl_stderr:.4f} ({result.chunks} chunks of {result.n_ctx}, {result.scored} tokens scored)\n")


def _int_list(text: str, option: str, minimum: int = 0) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated whole numbers, not {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise UsageError(f"{option} takes comma-separated whole numbers >= {minimum}, not {text!r}")
    return values


@app.command()
def bench(
    model: Optional[str] = ModelOption,
    n_prompt: str = typer.Option("512", "--n-prompt", "-p", help="Prompt lengths for ppN tests (comma-separated; 0: none)."),
    n_gen: str = typer.Option("128", "--n-gen", "-n", help="Tokens for tgN tests (comma-separated; 0: none)."),
    n_depth: str = typer.Option(
        "0", "--n-depth", "-d", help="Tokens already in the KV cache when each test starts, prefilled untimed (comma-separated)."
    ),
    threads: str = typer.Option("", "--threads", "-t", help="Thread counts (comma-separated; default: physical cores)."),
    repetitions: int = typer.Option(5, "--repetitions", "-r", help="Timed runs per test, after one warm-up.", min=1),
    batch: str = typer.Option("1", "--batch", help="Sequences decoded together in tgN tests (comma-separated)."),
    as_json: bool = _flag("--json", help="Print one JSON object with every repetition."),
) -> None:
    """Prefill (ppN) and decode (tgN) throughput, with llama-bench's definitions; each row is
    printed as soon as it is measured (a Markdown table, as llama-bench prints). Then the read
    bandwidth with each thread count, and the decode speed it allows for these weights."""
    from . import _native
    from .bench import cpu_info, run
    from .model import Model, load_files
    from .models import resolve

    prompts, gens, batches = _int_list(n_prompt, "--n-prompt"), _int_list(n_gen, "--n-gen"), _int_list(batch, "--batch", minimum=1)
    depths = _int_list(n_depth, "--n-depth")
    thread_counts = _int_list(threads, "--threads") if threads else [0]
    for t in thread_counts:  # every count before any run (0: one per physical core)
        _check_threads(t or None)
    path = resolve(model, log=_log)
    spec, tokenizer = load_files(path)
    for option, lengths in (("--n-prompt", prompts), ("--n-gen", gens)):
        if max(lengths) + max(depths) > spec.n_ctx:
            at_depth = f" after --n-depth {max(depths)}" if max(depths) else ""
            raise GptgenError(f"{option} {max(lengths)}{at_depth} is longer than the model's context of {spec.n_ctx} tokens")
    info = {"model": str(path), "n_params": spec.n_params, "kernels": _native.kernel_name(), "cpu": cpu_info()}
    if not as_json:
        _write(f"{path.name} ({info['kernels']}; {info['cpu']['model']}; {' '.join(info['cpu']['flags'])})\n\n")
        _write("| threads | test | t/s |\n| ---: | ---: | ---: |\n")
    results = []
    # Read bandwidth (GB/s) by thread count: a streaming read in the engine's own pool.
    bandwidth: dict[int, float] = {}
    weight_bytes = sum(t.data.nbytes for t in spec.tensors.values())
    for t in thread_counts:
        m = Model(spec, tokenizer, threads=t or None)
        tests = [(p, 0) for p in prompts] + [(0, g) for g in gens]
        for d in depths:
            for p, g in tests:
                measured = run(m, n_prompt=p, n_gen=g, batches=batches, repetitions=repetitions, n_depth=d)
                results += measured
                if not as_json:
                    _write("".join(f"| {r.threads} | {r.test} | {r.avg_ts:.2f} ± {r.stddev_ts:.2f} |\n" for r in measured))
        bandwidth[m.engine.threads] = m.engine.read_bandwidth(512, 3) / 1e9
    if as_json:
        _write(json.dumps({**info, "results": [r.as_dict() for r in results], "read_gb_s": bandwidth, "weight_bytes": weight_bytes}) + "\n")
    else:
        _write("\n" + "".join(
            f"read bandwidth, {t} thread{'s' if t > 1 else ''}: {gb:.1f} GB/s; the decode ceiling for {weight_bytes / 1e6:.1f} MB of weights: "
            f"{gb * 1e9 / weight_bytes:.0f} t/s\n"
            for t, gb in bandwidth.items()
        ))


def _attention_summary(cfg) -> str:
    """The attention options of an EngineConfig, in words."""
    parts = [name for name, on in (("q/k/v biases", cfg.qkv_bias), ("q/k norms", cfg.qk_norm)) if on]
    window = cfg.sliding_window
    if window is not None:
        local = f", rope base {window.rope.base:g}" if window.rope is not None else ""
        parts.append(f"sliding window {window.length} on {sum(window.layers)} of {len(window.layers)} layers{local}")
    return ", ".join(parts) or "plain"


@app.command()
def pull(
    name: str = typer.Argument("smollm2-135m-instruct", help="A known model name."),
    quiet: bool = _flag("--quiet", "-q", help="No progress display on stderr (shown on a terminal)."),
) -> None:
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
        target = pull_model(known, show_progress=False if quiet else None)
    _write(f"{target}\n")


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
        ("vocabulary", str(cfg.n_vocab)),
        ("context", str(cfg.n_ctx)),
        ("embedding", str(cfg.n_embd)),
        ("layers", str(cfg.n_layer)),
        ("heads", f"{cfg.n_head} (kv {cfg.n_kv_head}, dim {cfg.head_dim})"),
        ("attention", _attention_summary(cfg)),
        ("feed-forward", str(cfg.n_ff)),
        ("norm epsilon", f"{cfg.norm_eps:g}"),
        ("rope", f"base {cfg.rope.base:g}, {cfg.rope.dims} dims, {cfg.rope.pairing} pairs" if cfg.rope else "none"),
        ("kv cache", cfg.kv_cache),
        ("eos / bos ids", f"{m.tokenizer.eos_ids} / {m.tokenizer.bos_id}"),
        ("chat template", "yes" if spec.chat_template else "no"),
        ("kernels", f"{_native.kernel_name()}, {m.engine.threads} threads"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    Console().print(table)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Click's exception base: Typer >= 0.29 bundles its own click, older ones use click."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except ImportError:
            pass
    return tuple(found)


def main() -> None:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")  # generated text is UTF-8 whatever the locale
    try:
        # Typer returns an exit code instead of raising in this mode (130 after Ctrl-C).
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UsageError as e:
        _log(f"error: {e}")
        sys.exit(2)
    except GptgenError as e:
        _log(f"error: {e}")
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (_ReaderGone, BrokenPipeError):
        # The reader went away (`| head`): stop quietly, and keep Python's shutdown flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (KeyboardInterrupt, typer.Abort):
        # Ctrl-C: what was produced is already written; end like an interrupted program.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            pass
        sys.exit(130)
    except _usage_error_types() as e:
        # Usage errors (unknown option, bad number): one line, like every other error. With
        # no arguments at all the help has been shown and there is nothing to add.
        message = " ".join(e.format_message().split())
        if message:
            _log(f"error: {message}")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
