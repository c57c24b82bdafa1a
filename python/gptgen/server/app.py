"""The HTTP side of `gptgen serve`: a FastAPI app speaking the OpenAI API over the scheduler.

Routes: POST /v1/chat/completions and /v1/completions (JSON, or server-sent events with
`stream`), GET /v1/models, /health (503 while the model loads) and /metrics (Prometheus).
Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}` with a 4xx status for
what the client can fix. A request's choices run as sequences of the scheduler; a client that
goes away has its sequences cancelled, which frees their slots at the next step.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Optional, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..errors import GptgenError
from ..generate import TokenEvent
from ..model import Model
from ..session import prompt_tokens, render_messages, request_for
from .metrics import ServerMetrics
from .protocol import ApiError, ChatCompletionRequest, CompletionRequest, CommonFields, bad_request
from .settings import Settings
from .scheduler import Failure, Finished, PromptScores, QueueFull, Scheduler, Sequence, ShuttingDown

# Request bodies larger than this are refused (413): a prompt longer than any context fits well
# within it.
MAX_BODY_BYTES = 8 * 1024 * 1024
# OpenAI's default for /v1/completions; chat completions default to the rest of the context.
DEFAULT_COMPLETION_TOKENS = 16


class ServerState:
    """The model and its scheduler once loaded (load() runs on a thread of its own while the
    server already answers /health with 503), the settings, the metrics."""

    def __init__(self, settings: Settings, log: Callable[[str], None]):
        self.settings = settings
        self.log = log
        self.metrics = ServerMetrics()
        self.model: Model | None = None
        self.model_id = ""
        self.scheduler: Scheduler | None = None
        self.created = int(time.time())
        # Told when loading fails, with the message (the CLI stops the server).
        self.on_load_failure: Callable[[str], None] = lambda message: None

    def load(self) -> None:
        from ..api import LanguageModel
        from ..models import resolve

        s = self.settings
        try:
            path = resolve(s.model, log=self.log)
            model = LanguageModel.load(path, s.threads, log=self.log)
            n_ctx = s.ctx_size or model.n_ctx
            if n_ctx > model.n_ctx:
                raise GptgenError(f"--ctx-size {n_ctx} is larger than the model's context of {model.n_ctx} tokens")
            scheduler = Scheduler(model, parallel=s.parallel, max_queue=s.max_queue, n_ctx=n_ctx, prefill_chunk=s.prefill_chunk, metrics=self.metrics)
        except GptgenError as e:
            self.on_load_failure(str(e))
            return
        self.model_id = _served_name(s.model, path)
        scheduler.start()
        self.model, self.scheduler = model, scheduler
        self.log(f"gptgen serve: {self.model_id} ready ({model.engine.threads} threads, {s.parallel} slots of {n_ctx} tokens)")

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

    def ready(self) -> tuple[Model, Scheduler]:
        if self.model is None or self.scheduler is None:
            raise ApiError(503, "the model is loading", type="unavailable_error", code="model_loading")
        return self.model, self.scheduler


def _served_name(given: Optional[str], path) -> str:
    """What /v1/models calls the model: a known name or repo id as given, a path's file name."""
    import os

    from ..models import DEFAULT_MODEL

    name = given or os.environ.get("GPTGEN_MODEL") or DEFAULT_MODEL
    return path.name if os.path.exists(name) else name.lower() if "/" not in name else name


class Job:
    """The sequences of one request (every prompt's n choices, choice i = prompt * n + j), their
    results arriving on this event loop's queue as (choice, delivery)."""

    def __init__(self, state: ServerState, body: CommonFields, prompts: list[list[int]], *, default_tokens: Optional[int], top_logprobs: int, prompt_logprobs: Optional[int] = None):
        model, scheduler = state.ready()
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices = self.open_choices = len(prompts) * body.n
        if self.choices > scheduler.capacity:
            raise bad_request(f"{self.choices} choices are more than this server holds at once ({scheduler.capacity})", "n")
        wanted = body.wanted_tokens()
        self.sequences: list[Sequence] = []
        for p, ids in enumerate(prompts):
            max_tokens = _fit(ids, wanted, default_tokens, scheduler.n_ctx)
            options = body.options(model.spec.config.n_vocab, max_tokens, top_logprobs)
            seed = options.sampling.seed
            for j in range(body.n):
                request = request_for(model, ids, options.with_seed(None if seed is None else seed + j))
                choice = p * body.n + j

                def deliver(item: Any, choice: int = choice) -> None:
                    try:
                        loop.call_soon_threadsafe(self.queue.put_nowait, (choice, item))
                    except RuntimeError:  # the event loop has closed (the server stopped): no one is waiting
                        pass

                self.sequences.append(Sequence(model, request, deliver, n_ctx=scheduler.n_ctx, prompt_logprobs=prompt_logprobs))
        try:
            scheduler.submit(self.sequences)
        except QueueFull as e:
            raise ApiError(429, str(e), type="rate_limit_error", code="rate_limit_exceeded") from None
        except ShuttingDown as e:
            raise ApiError(503, str(e), type="unavailable_error", code="shutting_down") from None

    async def next(self) -> tuple[int, Any] | None:
        """The next (choice, TokenEvent | PromptScores | Finished | Failure); None once every
        choice has ended."""
        if not self.open_choices:
            return None
        choice, item = await self.queue.get()
        if isinstance(item, (Finished, Failure)):
            self.open_choices -= 1
        return choice, item

    async def deliveries(self) -> AsyncIterator[tuple[int, Any]]:
        while (delivery := await self.next()) is not None:
            yield delivery

    def cancel(self) -> None:
        for sequence in self.sequences:
            sequence.cancel()


def _fit(ids: list[int], wanted: Optional[int], default: Optional[int], n_ctx: int) -> int:
    """New tokens for a prompt of `ids`: as asked, or `default` (None: the rest of the context)
    cut to what the context holds; a 400 when the prompt or the request cannot fit."""
    if len(ids) >= n_ctx:
        raise ApiError(400, f"the prompt is {len(ids)} tokens; this server's context is {n_ctx}", code="context_length_exceeded", param="messages")
    room = n_ctx - len(ids)
    if wanted is None:
        return room if default is None else min(default, room)
    if wanted > room:
        raise ApiError(
            400,
            f"this server's context is {n_ctx} tokens, but {len(ids) + wanted} were requested ({len(ids)} in the prompt, {wanted} to generate)",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return wanted


def _token_text(model: Model, token: int) -> tuple[str, list[int]]:
    """A token as OpenAI's logprobs show it: its text (a control token's name) and its bytes."""
    data = model.tokenizer.token_bytes[token] or (model.tokenizer.backend.id_to_token(token) or "").encode()
    return data.decode("utf-8", errors="replace"), list(data)


class ChoiceText:
    """What one choice has produced so far."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.events: list[TokenEvent] = []
        self.prompt_scores: Optional[PromptScores] = None
        self.finished: Optional[Finished] = None


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="gptgen", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan(state))
    if state.settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=state.settings.cors_origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(CountRequests, metrics=state.metrics)
    _add_error_handlers(app)
    authorized = Depends(_key_check(state.settings.api_key))

    @app.get("/health")
    async def health() -> Response:
        if state.model is None:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        running, waiting = state.scheduler.load()
        return JSONResponse({"status": "ok", "running": running, "waiting": waiting})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=[authorized])
    async def list_models() -> dict:
        state.ready()
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id:path}", dependencies=[authorized])
    async def get_model(model_id: str) -> dict:
        state.ready()
        if model_id != state.model_id:
            raise ApiError(404, f"the model {model_id!r} does not exist; this server has {state.model_id!r}", code="model_not_found", param="model")
        return _model_card(state)

    @app.post("/v1/chat/completions", dependencies=[authorized])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        model, _ = state.ready()
        top = body.top_k_logprobs()
        ids = prompt_tokens(model, render_messages(model, body.chat_messages()))
        job = Job(state, body, [ids], default_tokens=None, top_logprobs=top or 0)
        reply = ChatReply(state, model, body, job, len(ids), top is not None)
        if body.stream:
            return _event_stream(reply.chunks(), job)
        return JSONResponse(await reply.whole(request))

    @app.post("/v1/completions", dependencies=[authorized])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        model, _ = state.ready()
        prompts = [_prompt_ids(model, p) for p in body.prompts()]
        scored = body.echo and body.logprobs is not None
        job = Job(state, body, prompts, default_tokens=DEFAULT_COMPLETION_TOKENS, top_logprobs=body.logprobs or 0, prompt_logprobs=body.logprobs if scored else None)
        reply = CompletionReply(state, model, body, job, prompts)
        if body.stream:
            return _event_stream(reply.chunks(), job)
        return JSONResponse(await reply.whole(request))

    return app


def _model_card(state: ServerState) -> dict:
    return {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "gptgen", "context_length": state.scheduler.n_ctx}


def _prompt_ids(model: Model, prompt: Union[str, list[int]]) -> list[int]:
    if isinstance(prompt, str):
        return prompt_tokens(model, prompt)
    n_vocab = model.spec.config.n_vocab
    bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise bad_request(f"token id {bad} in the prompt is outside the vocabulary of {n_vocab}", "prompt")
    return prompt


class _Reply:
    """A job's results as OpenAI's response (whole) or its stream of chunks."""

    object_name = ""
    id_prefix = ""

    def __init__(self, state: ServerState, model: Model, body: CommonFields, job: Job):
        self.state, self.model, self.body, self.job = state, model, body, job
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.choices = [ChoiceText() for _ in range(job.choices)]

    def envelope(self, **fields: Any) -> dict:
        return {"id": self.id, "object": self.object_name, "created": self.created, "model": self.state.model_id, **fields}

    def usage(self) -> dict:
        prompt = self.prompt_token_count()
        completion = sum(c.finished.completion_tokens for c in self.choices if c.finished)
        cached = max((c.finished.cached_tokens for c in self.choices if c.finished), default=0)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}}

    def prompt_token_count(self) -> int:
        """Prompt tokens, counted once per prompt (in the subclasses)."""
        raise NotImplementedError

    def take(self, choice: int, item: Any) -> None:
        """Records a delivery; a failure ends the reply with a 500."""
        c = self.choices[choice]
        if isinstance(item, TokenEvent):
            c.events.append(item)
            c.pieces.append(item.text)
        elif isinstance(item, PromptScores):
            c.prompt_scores = item
        elif isinstance(item, Finished):
            c.pieces.append(item.tail)
            c.finished = item
            self.log_finished(choice, item)
        elif isinstance(item, Failure):
            raise ApiError(500, item.message, type="server_error", code="generation_failed")

    def log_finished(self, choice: int, f: Finished) -> None:
        if self.state.settings.verbose:
            rate = (f.completion_tokens - 1) / f.decode_seconds if f.decode_seconds > 0 else 0.0
            self.state.log(
                f"{self.id} choice {choice}: prompt {f.prompt_tokens} tokens ({f.cached_tokens} cached), first token after "
                f"{f.time_to_first_token:.3f} s, {f.completion_tokens} tokens at {rate:.1f} tok/s, {f.finish_reason}"
            )

    async def whole(self, request: Request) -> dict:
        """Waits for every choice (cancelling them if the client goes away) and builds the response."""
        waiting = None
        try:
            while True:
                waiting = waiting or asyncio.ensure_future(self.job.next())
                done, _ = await asyncio.wait({waiting}, timeout=1.0)
                if not done:
                    if await request.is_disconnected():
                        raise ApiError(499, "the client closed the connection", code="client_closed")
                    continue
                delivery, waiting = waiting.result(), None
                if delivery is None:
                    return self.response()
                self.take(*delivery)
        finally:
            if waiting is not None:
                waiting.cancel()
            self.job.cancel()

    def response(self) -> dict:
        """The whole response, once every choice has ended (in the subclasses)."""
        raise NotImplementedError

    def logprob_entry(self, token: int, logprob: float, top: list[tuple[int, float]]) -> dict:
        text, data = _token_text(self.model, token)
        alternatives = []
        for t, lp in top:
            t_text, t_data = _token_text(self.model, t)
            alternatives.append({"token": t_text, "logprob": lp, "bytes": t_data})
        return {"token": text, "logprob": logprob, "bytes": data, "top_logprobs": alternatives}


class ChatReply(_Reply):
    object_name = "chat.completion"
    id_prefix = "chatcmpl"

    def __init__(self, state: ServerState, model: Model, body: ChatCompletionRequest, job: Job, n_prompt: int, logprobs: bool):
        super().__init__(state, model, body, job)
        self.n_prompt = n_prompt
        self.logprobs = logprobs

    def prompt_token_count(self) -> int:
        return self.n_prompt

    def response(self) -> dict:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": "".join(c.pieces)},
                "logprobs": {"content": [self.logprob_entry(e.token, e.logprob, e.top) for e in c.events]} if self.logprobs else None,
                "finish_reason": c.finished.finish_reason,
            }
            for i, c in enumerate(self.choices)
        ]
        return self.envelope(choices=choices, usage=self.usage())

    async def chunks(self) -> AsyncIterator[dict]:
        usage = {"usage": None} if self.body.include_usage() else {}
        chunk = lambda i, delta, logprobs=None, finish=None: self.envelope(  # noqa: E731
            object="chat.completion.chunk", choices=[{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}], **usage
        )
        for i in range(self.job.choices):
            yield chunk(i, {"role": "assistant", "content": ""})
        async for i, item in self.job.deliveries():
            self.take(i, item)
            if isinstance(item, TokenEvent) and (item.text or self.logprobs):
                logprobs = {"content": [self.logprob_entry(item.token, item.logprob, item.top)]} if self.logprobs else None
                yield chunk(i, {"content": item.text}, logprobs)
            elif isinstance(item, Finished):
                if item.tail:
                    yield chunk(i, {"content": item.tail})
                yield chunk(i, {}, finish=item.finish_reason)
        if usage:
            yield self.envelope(object="chat.completion.chunk", choices=[], usage=self.usage())


class CompletionReply(_Reply):
    object_name = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, state: ServerState, model: Model, body: CompletionRequest, job: Job, prompts: list[list[int]]):
        super().__init__(state, model, body, job)
        self.prompts = prompts
        self.echo = body.echo
        self.top = body.logprobs

    def prompt_token_count(self) -> int:
        return sum(len(p) for p in self.prompts)

    def prompt_of(self, choice: int) -> list[int]:
        return self.prompts[choice // self.body.n]

    def prompt_text(self, choice: int) -> str:
        return self.model.tokenizer.decode(self.prompt_of(choice))

    def logprobs_of(self, choice: int, start_offset: int) -> dict:
        """OpenAI's completion logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
        c = self.choices[choice]
        entries: list[tuple[int, Optional[float], Optional[list[tuple[int, float]]]]] = []
        if self.echo:
            prompt = self.prompt_of(choice)
            scores = c.prompt_scores.scores if c.prompt_scores else []
            entries += [(prompt[0], None, None)] + [(t, lp, top) for t, (lp, top) in zip(prompt[1:], scores)]
        entries += [(e.token, e.logprob, e.top) for e in c.events]
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        offset = start_offset
        for token, logprob, top in entries:
            text, _ = _token_text(self.model, token)
            out["tokens"].append(text)
            out["token_logprobs"].append(logprob)
            out["top_logprobs"].append(None if top is None else {_token_text(self.model, t)[0]: lp for t, lp in top})
            out["text_offset"].append(offset)
            offset += len(self.model.tokenizer.token_bytes[token].decode("utf-8", errors="replace"))
        return out

    def response(self) -> dict:
        choices = []
        for i, c in enumerate(self.choices):
            prefix = self.prompt_text(i) if self.echo else ""
            choices.append(
                {
                    "index": i,
                    "text": prefix + "".join(c.pieces),
                    "logprobs": self.logprobs_of(i, 0) if self.top is not None else None,
                    "finish_reason": c.finished.finish_reason,
                }
            )
        return self.envelope(choices=choices, usage=self.usage())

    async def chunks(self) -> AsyncIterator[dict]:
        usage = {"usage": None} if self.body.include_usage() else {}
        chunk = lambda i, text, logprobs=None, finish=None: self.envelope(  # noqa: E731
            choices=[{"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish}], **usage
        )
        offsets = [0] * self.job.choices
        if self.echo and self.top is None:
            for i in range(self.job.choices):
                offsets[i] = len(self.prompt_text(i))
                yield chunk(i, self.prompt_text(i))
        async for i, item in self.job.deliveries():
            self.take(i, item)
            if isinstance(item, PromptScores):
                # Echo with logprobs: the prompt and its scores as one chunk, once they are known.
                text = self.prompt_text(i)
                yield chunk(i, text, self.logprobs_of(i, 0))
                offsets[i] = len(text)
            elif isinstance(item, TokenEvent) and (item.text or self.top is not None):
                logprobs = None
                if self.top is not None:
                    entry = self.logprob_entry(item.token, item.logprob, item.top)
                    logprobs = {"tokens": [entry["token"]], "token_logprobs": [item.logprob],
                                "top_logprobs": [{a["token"]: a["logprob"] for a in entry["top_logprobs"]}], "text_offset": [offsets[i]]}
                offsets[i] += len(item.text)
                yield chunk(i, item.text, logprobs)
            elif isinstance(item, Finished):
                yield chunk(i, item.tail, finish=item.finish_reason)
        if usage:
            yield self.envelope(choices=[], usage=self.usage())


def _event_stream(chunks: AsyncIterator[dict], job: Job) -> StreamingResponse:
    """Server-sent events: `data: {chunk}` lines, then `data: [DONE]`; an error mid-stream as a
    `data: {"error": ...}` event. A client that goes away cancels the job."""

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        except ApiError as e:
            yield f"data: {json.dumps(_error_body(e))}\n\n"
        finally:
            job.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---- errors, keys, limits ----


def _error_body(e: ApiError) -> dict:
    return {"error": {"message": str(e), "type": e.type, "param": e.param, "code": e.code}}


def _error_response(e: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if e.status in (429, 503) else None
    return JSONResponse(_error_body(e), status_code=e.status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(GptgenError)
    async def gptgen_error(request: Request, e: GptgenError) -> JSONResponse:
        # Problems with the request's content (a chat template refusing the messages, ...).
        return _error_response(bad_request(str(e)))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_error(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _error_response(ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}", type=kind))


# How pydantic names the branch of a union a value failed (messages.0.content.str): not a field.
_BRANCH = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|[A-Z]\w*|function-\w+\[.*\])$")
_JSON_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "list": "an array", "dict": "an object"}


def _validation_error(e: RequestValidationError) -> ApiError:
    """The first problem pydantic found, naming the field (messages[0].role: ...)."""
    errors = e.errors()
    first = errors[0]
    if first.get("type") == "json_invalid":
        return bad_request(f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}")
    path, branch = _field_path(first.get("loc", ()))
    if not path:
        return bad_request("the body must be a JSON object")
    param = path.split(".")[0].split("[")[0]
    if branch is None:
        return bad_request(f"{path}: {first.get('msg')}", param)
    # A value no branch of a union took (pydantic reports each branch).
    tried = [(error, _branch_kind(b)) for error in errors for p, b in [_field_path(error.get("loc", ()))] if p == path and b is not None]
    got = _JSON_KINDS.get(type(first.get("input")).__name__, "null")
    inner = next((error for error, kind in tried if kind == got), None)
    if inner is not None:
        # The right kind of value with something wrong inside: that branch's complaint, and where.
        rest = inner["loc"][[str(part) for part in inner["loc"]].index(_field_path(inner["loc"])[1]) + 1 :]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)
        return bad_request(f"{path}{where}: {inner.get('msg')}", param)
    kinds = list(dict.fromkeys(kind for _, kind in tried))
    if "a number" in kinds and "an integer" in kinds:
        kinds.remove("an integer")
    return bad_request(f"{path}: expected {' or '.join(kinds)}, not {got}", param)


def _field_path(loc: tuple) -> tuple[str, str | None]:
    """("body", "messages", 0, "content", "str") -> ("messages[0].content", "str"): the field,
    and the union branch the value failed, if any."""
    path = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _BRANCH.match(part) and path:
            return path, part
        else:
            path += f".{part}" if path else part
    return path, None


def _branch_kind(branch: str) -> str:
    """A union branch's kind of JSON value: "list[str]" -> "an array"."""
    return _JSON_KINDS.get(branch.split("[")[0], "an object")


def _key_check(api_key: Optional[str]) -> Callable:
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(401, "a missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    return check


class BodyLimit:
    """Refuses bodies over `limit` bytes with a 413, by Content-Length or as they arrive."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = ApiError(413, f"the request body is larger than {self.limit} bytes", code="body_too_large")
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _error_response(too_large)(scope, receive, send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _error_response(too_large)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class CountRequests:
    """Counts answered requests by endpoint and status code (gptgen_requests_total)."""

    ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

    def __init__(self, app: Any, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        endpoint = path if path in self.ENDPOINTS else "/v1/models" if path.startswith("/v1/models/") else "other"

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(endpoint=endpoint, status=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted_send)


def _lifespan(state: ServerState):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(target=state.load, name="gptgen-load", daemon=True)
        loader.start()
        yield
        state.stop()

    return lifespan


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
