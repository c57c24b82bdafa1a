"""`gptgen serve` as its users meet it: a real server process on 127.0.0.1, spoken to with the
official `openai` client (sync, streaming, async) and with raw HTTP for the error cases. The
replies are checked against `gptgen generate` and the Python API run on their own, one request
at a time, with the same prompt, template and seed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time

import httpx
import openai
import pytest
from conftest import gptgen_command, run_cli

import gptgen

START_TIMEOUT_S = 120


class Server:
    """`gptgen serve --port 0 ARGS` running until stop(): its URL is read off its stderr."""

    def __init__(self, *args: str, env: dict | None = None):
        self.process = subprocess.Popen(
            [*gptgen_command(), "serve", "--port", "0", "--threads", "2", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.stderr: list[str] = []
        self._url = threading.Event()
        self.url = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        assert self._url.wait(START_TIMEOUT_S), f"no URL on stderr: {self.stderr}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while httpx.get(f"{self.url}/health").status_code != 200:
            assert self.process.poll() is None and time.monotonic() < deadline, f"the server did not become ready: {self.stderr}"
            time.sleep(0.1)

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stderr.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self._url.set()

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0, **kwargs)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=300)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=120, **kwargs)

    def running(self) -> int:
        return httpx.get(f"{self.url}/health").json()["running"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server():
    s = Server("--parallel", "8", "--max-queue", "64", "--verbose")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def small_server():
    """Four slots, a queue of four, a context of 256 tokens, an API key and one CORS origin."""
    s = Server("--parallel", "4", "--max-queue", "4", "--ctx-size", "256", "--api-key", "sesame", "--cors-origin", "http://example.com")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def model():
    return gptgen.load(threads=2)


def _generate_json(*args: str) -> dict:
    out = run_cli("generate", "--json", *args)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


def _token_texts(model, ids: list[int]) -> list[str]:
    return [(model.tokenizer.token_bytes[i] or model.tokenizer.backend.id_to_token(i).encode()).decode("utf-8", errors="replace") for i in ids]


# ---- replies equal to gptgen generate ----


def test_chat_completion_equals_generate_with_the_same_template_and_seed(server, model):
    question = "Name three colours of the rainbow."
    expected = _generate_json(question, "--chat", "--seed", "11", "-t", "0.9", "-n", "40", "--logprobs", "3")
    reply = server.client().chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": question}],
        seed=11,
        temperature=0.9,
        max_tokens=40,
        logprobs=True,
        top_logprobs=3,
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected["text"]
    assert choice.finish_reason == expected["finish_reason"]
    assert reply.usage.prompt_tokens == len(expected["prompt_tokens"])
    assert reply.usage.completion_tokens == len(expected["tokens"])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    content = choice.logprobs.content
    assert [c.token for c in content] == _token_texts(model, expected["tokens"])
    for got, want in zip(content, expected["logprobs"]):
        assert got.logprob == pytest.approx(want["logprob"], abs=1e-9)
        assert [t.token for t in got.top_logprobs] == _token_texts(model, [i for i, _ in want["top"]])
        assert [t.logprob for t in got.top_logprobs] == pytest.approx([lp for _, lp in want["top"]], abs=1e-9)


def test_streamed_chat_concatenates_to_the_whole_reply(server):
    kwargs = dict(model="m", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}], seed=3, max_completion_tokens=30)
    whole = server.client().chat.completions.create(**kwargs)
    stream = server.client().chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completion_equals_generate_with_logprobs_and_stop(server, model):
    prompt = "The first five prime numbers are"
    expected = _generate_json(prompt, "-t", "0", "-n", "24", "--logprobs", "2", "--stop", ".")
    reply = server.client().completions.create(model="m", prompt=prompt, temperature=0, max_tokens=24, logprobs=2, stop=".")
    choice = reply.choices[0]
    assert choice.text == expected["text"]
    assert choice.finish_reason == expected["finish_reason"]
    assert reply.usage.completion_tokens == len(expected["tokens"])
    assert choice.logprobs.tokens == _token_texts(model, expected["tokens"])
    assert choice.logprobs.token_logprobs == pytest.approx([e["logprob"] for e in expected["logprobs"]], abs=1e-9)
    assert [list(d) for d in choice.logprobs.top_logprobs] == [_token_texts(model, [i for i, _ in e["top"]]) for e in expected["logprobs"]]
    # text_offset: where each token's text starts in the choice's text.
    assert choice.logprobs.text_offset == [sum(len(t) for t in choice.logprobs.tokens[:k]) for k in range(len(choice.logprobs.tokens))]


def test_completion_list_of_prompts_n_choices_and_seeds(server, model):
    prompts = ["Once upon a time", "The weather today"]
    reply = server.client().completions.create(model="m", prompt=prompts, n=2, seed=40, temperature=1.0, max_tokens=12)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    for c in reply.choices:
        # Prompt p's choice j has the seed 40 + j, as --num-return-sequences gives sample j.
        expected = model.generate(prompts[c.index // 2], seed=40 + c.index % 2, temperature=1.0, max_tokens=12)
        assert c.text == expected.text
    assert reply.usage.prompt_tokens == sum(len(model.tokenize(p)) for p in prompts)


def test_echo_with_logprobs_scores_the_prompt_as_perplexity_would(server, model):
    import numpy as np

    prompt = "The cat sat on the mat."
    reply = server.client().completions.create(model="m", prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    choice = reply.choices[0]
    ids = model.tokenize(prompt)
    assert choice.text == prompt
    assert choice.logprobs.tokens == _token_texts(model, ids)
    assert choice.logprobs.token_logprobs[0] is None
    # Independent of the server: the teacher-forced logits of the whole prompt in one session.
    logits = model.new_session(len(ids)).forward(ids, all_logits=True).astype(np.float64)
    logprobs = logits - np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)) - logits.max(axis=1, keepdims=True)
    want = [float(logprobs[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(want, abs=1e-6)


def test_models_lists_the_loaded_model(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == ["smollm2-135m-instruct"]
    assert server.client().models.retrieve("smollm2-135m-instruct").id == "smollm2-135m-instruct"
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("gpt-4")


# ---- many clients at once ----


def test_sixteen_concurrent_streams_each_equal_to_its_run_alone(server, model):
    questions = [f"Write a sentence about the number {i}." for i in range(16)]

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str]:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": questions[i]}], seed=100 + i, temperature=0.8, max_tokens=48, stream=True
        )
        pieces, finish = [], None
        async for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        return "".join(pieces), finish

    async def everyone() -> list[tuple[str, str]]:
        client = server.async_client()
        return await asyncio.gather(*(one(client, i) for i in range(16)))

    replies = asyncio.run(everyone())
    for i, (text, finish) in enumerate(replies):
        alone = model.generate([{"role": "user", "content": questions[i]}], seed=100 + i, temperature=0.8, max_tokens=48)
        assert (text, finish) == (alone.text, alone.finish_reason), i


def test_a_client_that_disconnects_frees_its_slot_and_disturbs_no_one(server, model):
    messages = [{"role": "user", "content": "Tell me a long story about a lighthouse."}]
    results = {}

    def steady() -> None:
        results["steady"] = server.client().chat.completions.create(model="m", messages=messages, seed=5, max_tokens=64).choices[0].message.content

    with httpx.Client(timeout=60) as raw:
        with raw.stream(
            "POST", f"{server.url}/v1/chat/completions", json={"messages": messages, "max_tokens": 4000, "ignore_eos": True, "stream": True}
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            other = threading.Thread(target=steady)
            other.start()
            for _ in range(10):
                next(lines)
            assert server.running() >= 1
        # The connection is closed here, mid-stream.
    other.join()
    deadline = time.monotonic() + 10
    while server.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.running() == 0
    assert results["steady"] == model.generate(messages, seed=5, max_tokens=64).text


def test_a_hundred_requests_through_four_slots_are_answered_or_refused(small_server, model):
    prompts = [f"{i} plus {i} is" for i in range(100)]
    answers: dict[int, httpx.Response] = {}

    def ask(i: int) -> None:
        answers[i] = small_server.post(
            "/v1/completions", json={"prompt": prompts[i], "max_tokens": 6, "temperature": 0}, headers={"Authorization": "Bearer sesame"}
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == list(range(100))
    codes = [answers[i].status_code for i in range(100)]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 8  # the four slots and the queue of four, at least once
    ids = set()
    for i, response in answers.items():
        body = response.json()
        if response.status_code == 429:
            assert response.headers["retry-after"] and body["error"]["code"] == "rate_limit_exceeded"
            continue
        ids.add(body["id"])
        assert body["choices"][0]["text"] == model.generate(prompts[i], temperature=0, max_tokens=6).text, i
    assert len(ids) == codes.count(200)
    assert small_server.running() == 0


def test_a_shared_prefix_is_not_computed_again(server):
    system = {"role": "system", "content": "You are a careful assistant who answers in one short sentence. " * 4}
    first = server.client().chat.completions.create(model="m", messages=[system, {"role": "user", "content": "Hi"}], max_tokens=4, temperature=0)
    second = server.client().chat.completions.create(
        model="m", messages=[system, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "And?"}],
        max_tokens=4, temperature=0,
    )
    # All of the first prompt but its last few rows (a longer prompt sums them otherwise).
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens // 4 * 4


# ---- bad input: a 4xx with a message, the server still up ----


BAD_BODIES = [
    ("not json", 400, "JSON"),
    ('{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', 400, "temperature"),
    ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}', 400, "max_tokens"),
    ('{"messages": [{"role": "user", "content": "hi"}], "n": 0}', 400, "n"),
    ('{"messages": [{"role": "user", "content": "hi"}], "n": 100000}', 400, "n"),
    ('{"messages": []}', 400, "messages"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    ('{"messages": [{"role": "user", "content": 5}]}', 400, "content"),
    ('{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}', 400, "top_p"),
    ('{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"cat": 5}}', 400, "logit_bias"),
    ('{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}', 400, "logprobs"),
    ("[1, 2]", 400, "object"),
    ("{}", 400, "messages"),
]


@pytest.mark.parametrize("body, status, named", BAD_BODIES)
def test_bad_chat_bodies_are_4xx_with_a_message(server, body, status, named):
    response = server.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert named.lower() in error["message"].lower() and error["type"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_bad_completion_bodies_are_400(server):
    for body, named in [({"prompt": []}, "prompt"), ({"prompt": [10**9]}, "vocabulary"), ({"prompt": "x", "logprobs": 50}, "logprobs"), ({"prompt": "x", "echo": "yes"}, "echo")]:
        response = server.post("/v1/completions", json=body)
        assert response.status_code == 400 and named in response.json()["error"]["message"], (body, response.text)


def test_an_oversized_body_is_413_and_unknown_fields_are_ignored(server):
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]})
    response = server.post("/v1/chat/completions", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger" in response.json()["error"]["message"]
    fine = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "frobnicate": 1})
    assert fine.status_code == 200
    assert server.post("/v1/nothing", json={}).status_code == 404


def test_context_limits_are_400_and_keys_401(small_server):
    key = {"Authorization": "Bearer sesame"}
    long_prompt = " ".join(["word"] * 400)
    response = small_server.post("/v1/completions", json={"prompt": long_prompt}, headers=key)
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
    response = small_server.post("/v1/completions", json={"prompt": "hi", "max_tokens": 300}, headers=key)
    assert response.status_code == 400 and "256" in response.json()["error"]["message"]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = small_server.post("/v1/completions", json={"prompt": "hi"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        small_server.client(api_key="wrong").models.list()
    assert small_server.client(api_key="sesame").models.list().data[0].id == "smollm2-135m-instruct"


def test_cors_preflight_names_the_allowed_origin_only(small_server):
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(f"{small_server.url}/v1/chat/completions", headers={"Origin": "http://example.com", **ask})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://example.com"
    other = httpx.options(f"{small_server.url}/v1/chat/completions", headers={"Origin": "http://evil.example", **ask})
    assert "access-control-allow-origin" not in other.headers


# ---- metrics, health, the command's life ----


def test_verbose_logs_each_request_and_the_access_log_is_on_stderr(server):
    reply = server.client().completions.create(model="m", prompt="Hello there", max_tokens=3, temperature=0)
    deadline = time.monotonic() + 5
    while not any(reply.id in line for line in server.stderr) and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in server.stderr if reply.id in line)
    assert f"prompt {reply.usage.prompt_tokens} tokens" in line and "first token after" in line and "3 tokens at" in line
    assert any('"POST /v1/completions HTTP/1.1" 200' in line for line in server.stderr)


def test_metrics_count_requests_tokens_and_latencies(server):
    from prometheus_client.parser import text_string_to_metric_families

    server.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "Hello"}], max_tokens=5, temperature=0)
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    ok_chats = [s.value for s in families["gptgen_requests"].samples if s.labels == {"endpoint": "/v1/chat/completions", "status": "200"} and s.name.endswith("_total")]
    assert ok_chats and ok_chats[0] >= 1
    assert any(s.value >= 5 for s in families["gptgen_generation_tokens"].samples if s.name.endswith("_total"))
    assert any(s.value >= 1 for s in families["gptgen_time_to_first_token_seconds"].samples if s.name.endswith("_count"))
    assert "gptgen_queue_depth" in families and "gptgen_batch_rows" in families and "gptgen_time_per_output_token_seconds" in families


def test_health_is_503_until_the_model_is_loaded():
    from fastapi.testclient import TestClient

    from gptgen.server import Settings
    from gptgen.server.app import ServerState, create_app

    client = TestClient(create_app(ServerState(Settings(), log=lambda _: None)))  # no lifespan: nothing loads
    assert client.get("/health").status_code == 503
    response = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 503 and response.headers["retry-after"] and response.json()["error"]["code"] == "model_loading"


def test_sigterm_stops_a_busy_server_with_exit_0():
    s = Server("--parallel", "2")
    got: list[str] = []

    def stream() -> None:
        try:
            with httpx.stream("POST", f"{s.url}/v1/completions", json={"prompt": "Once", "max_tokens": 4000, "ignore_eos": True, "stream": True}, timeout=60) as r:
                for line in r.iter_lines():
                    got.append(line)
        except httpx.HTTPError:
            got.append("(cut)")

    reader = threading.Thread(target=stream)
    reader.start()
    while len(got) < 4:
        time.sleep(0.02)
    start = time.monotonic()
    s.process.send_signal(signal.SIGTERM)
    assert s.process.wait(timeout=15) == 0
    assert time.monotonic() - start < 10
    reader.join(timeout=10)
    assert not reader.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/health")


def test_serve_without_its_extra_says_what_to_install(tmp_path):
    # A package that fails to import stands for one that is not installed.
    (tmp_path / "fastapi").mkdir()
    (tmp_path / "fastapi" / "__init__.py").write_text("raise ImportError('No module named fastapi')\n")
    out = run_cli("serve", "--port", "0", env={"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 1
    assert out.stderr.decode().strip() == "error: gptgen serve needs fastapi: pip install 'gptgen[serve]'"


def test_serve_refuses_a_bad_model_and_a_busy_port():
    out = run_cli("serve", "--port", "0", "-m", "/nonexistent/model.gguf", timeout=60)
    assert out.returncode == 1 and out.stderr.decode().strip().splitlines()[-1].startswith("error: model")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = run_cli("serve", "--port", str(taken.getsockname()[1]), timeout=60)
    assert out.returncode == 1 and "cannot listen" in out.stderr.decode()
