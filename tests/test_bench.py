"""`gptgen bench`: llama-bench's definitions (checked against a clock the test controls) and the
command's JSON and errors."""

from __future__ import annotations

import json
import statistics
from types import SimpleNamespace

import pytest
from safetensors.numpy import load_file

from conftest import TINY_GPT2, run_cli
from gptgen import bench

# Seconds the fake engine takes per prefilled token and per decode step (of any batch).
PER_TOKEN, PER_STEP, PER_BATCH_STEP = 0.001, 0.004, 0.010


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0


class FakeModel:
    """Stands in for gptgen.model.Model: advances the clock as the engine would take time, and
    records every session and call."""

    def __init__(self, clock: FakeClock, n_vocab: int) -> None:
        self.clock, self.sessions, self.batch_calls = clock, [], []
        self.spec = SimpleNamespace(config=SimpleNamespace(n_vocab=n_vocab))
        self.engine = SimpleNamespace(threads=3, forward_batch=self._forward_batch)

    def new_session(self, max_seq: int):
        session = SimpleNamespace(max_seq=max_seq, fed=[], forward=None)

        def forward(tokens):
            assert len(session.fed) + len(tokens) <= max_seq, "the session was made too short"
            session.fed.extend(tokens)
            self.clock.now += PER_TOKEN * len(tokens) if len(tokens) > 1 else PER_STEP

        session.forward = forward
        self.sessions.append(session)
        return session

    def _forward_batch(self, sessions, tokens):
        assert all(len(t) == 1 for t in tokens) and len(tokens) == len(sessions)
        for session, toks in zip(sessions, tokens):
            assert len(session.fed) + 1 <= session.max_seq
            session.fed.extend(toks)
        self.batch_calls.append(len(sessions))
        self.clock.now += PER_BATCH_STEP


def run_on_fake_clock(monkeypatch, **options) -> tuple[FakeModel, list]:
    """bench.run of pp16, tg8 and tg8 x4, three repetitions, on the fake engine and clock."""
    clock = FakeClock()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock.now)
    model = FakeModel(clock, n_vocab=50)
    return model, bench.run(model, n_prompt=16, n_gen=8, batches=[1, 4], repetitions=3, **options)


def assert_timed_rates(pp, tg, tg4) -> None:
    """ppN: N tokens over one prefill's time; tgN: N steps of one token; xB: B * N tokens over
    N batched steps. Only the timed runs are among the samples."""
    assert pp.samples_ts == pytest.approx([16 / (16 * PER_TOKEN)] * 3)
    assert tg.samples_ts == pytest.approx([8 / (8 * PER_STEP)] * 3)
    assert tg4.samples_ts == pytest.approx([4 * 8 / (8 * PER_BATCH_STEP)] * 3)


def test_bench_follows_llama_bench_definitions(monkeypatch):
    model, results = run_on_fake_clock(monkeypatch)

    assert [(r.test, r.n_prompt, r.n_gen, r.batch, r.threads) for r in results] == [
        ("pp16", 16, 0, 1, 3),
        ("tg8", 0, 8, 1, 3),
        ("tg8 x4", 0, 8, 4, 3),
    ]
    assert_timed_rates(*results)  # the warm-up runs are not among the samples
    # mean and sample standard deviation, as llama-bench reports
    for r in results:
        assert r.avg_ts == pytest.approx(statistics.mean(r.samples_ts))
        assert r.stddev_ts == pytest.approx(statistics.stdev(r.samples_ts))

    # A fresh session (an empty KV cache) for every run: prefill one warm-up + 3, decode one
    # warm-up + 3, batched decode one warm-up + 3 of four sessions each.
    prefills = [s for s in model.sessions if len(s.fed) == 16]
    assert len(prefills) == 4 and all(s.max_seq == 16 for s in prefills)
    timed_decodes = [s for s in model.sessions if len(s.fed) == 8]
    assert len(timed_decodes) == 3 + 3 * 4
    # Random tokens within the vocabulary, the same ones for every repetition of a test.
    assert all(0 <= t < 50 for s in model.sessions for t in s.fed)
    assert prefills[1].fed == prefills[2].fed == prefills[3].fed
    assert model.batch_calls == [4] * (2 + 3 * 8)  # the warm-up runs two steps


def test_depth_is_prefilled_untimed_into_every_fresh_session(monkeypatch):
    """llama-bench's -d: each run starts from a fresh cache holding n_depth random tokens,
    which are not timed."""
    model, results = run_on_fake_clock(monkeypatch, n_depth=5)

    assert [(r.test, r.n_prompt, r.n_gen, r.batch, r.n_depth) for r in results] == [
        ("pp16 @ d5", 16, 0, 1, 5),
        ("tg8 @ d5", 0, 8, 1, 5),
        ("tg8 x4 @ d5", 0, 8, 4, 5),
    ]
    assert_timed_rates(*results)  # the depth's prefill is not timed
    # Every session of a test (its warm-up's too) first took the same five random tokens,
    # with room for the test's tokens after them (the decode warm-ups run two steps).
    pp_sessions, tg_sessions, tg4_sessions = model.sessions[:4], model.sessions[4:8], model.sessions[8:]
    assert len(tg4_sessions) == 4 * 4
    for sessions in (pp_sessions, tg_sessions, tg4_sessions):
        depth = sessions[0].fed[:5]
        assert len(depth) == 5 and all(0 <= t < 50 for t in depth)
        assert all(s.fed[:5] == depth for s in sessions)
    assert [s.max_seq for s in pp_sessions] == [5 + 16] * 4
    assert [s.max_seq for s in tg_sessions] == [5 + 2] + [5 + 8] * 3
    assert [s.max_seq for s in tg4_sessions] == [5 + 2] * 4 + [5 + 8] * 12
    # Depth 0 is the plain test, named as before.
    assert [r.test for r in bench.run(model, n_prompt=4, n_gen=2, batches=[1], repetitions=1, n_depth=0)] == ["pp4", "tg2"]


def test_bench_json_reports_every_repetition():
    out = run_cli("bench", "-m", str(TINY_GPT2), "-p", "8", "-n", "4", "-r", "3", "-t", "1,2", "--batch", "1,2", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["n_params"] == sum(t.size for t in load_file(TINY_GPT2 / "model.safetensors").values())
    assert report["kernels"] in ("avx2+vnni", "avx2", "scalar")
    assert report["cpu"]["model"] and isinstance(report["cpu"]["flags"], list)
    tests = [(r["threads"], r["test"], r["n_prompt"], r["n_gen"], r["batch"]) for r in report["results"]]
    assert tests == [(t, name, p, n, b) for t in (1, 2) for name, p, n, b in (("pp8", 8, 0, 1), ("tg4", 0, 4, 1), ("tg4 x2", 0, 4, 2))]
    for r in report["results"]:
        assert r["n_depth"] == 0
        assert len(r["samples_ts"]) == 3 and all(v > 0 for v in r["samples_ts"])
        assert r["avg_ts"] == pytest.approx(statistics.mean(r["samples_ts"]))
        assert r["stddev_ts"] == pytest.approx(statistics.stdev(r["samples_ts"]))
    # The read bandwidth with each thread count (a measurement: only its form is checked).
    assert sorted(report["read_gb_s"]) == ["1", "2"] and all(0 < v < 10_000 for v in report["read_gb_s"].values())
    assert report["weight_bytes"] == sum(t.nbytes for t in load_file(TINY_GPT2 / "model.safetensors").values())


def test_bench_runs_every_test_at_every_depth():
    out = run_cli("bench", "-m", str(TINY_GPT2), "-p", "8", "-n", "4", "-d", "0,100", "-r", "2", "-t", "1", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [(r["test"], r["n_depth"]) for r in results] == [("pp8", 0), ("tg4", 0), ("pp8 @ d100", 100), ("tg4 @ d100", 100)]
    assert all(len(r["samples_ts"]) == 2 and all(v > 0 for v in r["samples_ts"]) for r in results)


def test_bench_prints_a_row_for_each_test_as_it_is_measured():
    """Without --json: llama-bench's Markdown table, one row per test in the order they run,
    read here line by line from the pipe."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "gptgen", "bench", "-m", str(TINY_GPT2), "-p", "8", "-n", "4", "-d", "0,100", "-r", "2", "-t", "1,2"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [process.stdout.readline() for _ in range(5)]  # title, blank, header, rule, first row
    assert lines[4].startswith("| 1 | pp8 | ")
    rest, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert lines[2:4] == ["| threads | test | t/s |\n", "| ---: | ---: | ---: |\n"]
    rows = [line.split(" | ")[:2] for line in [lines[4], *rest.splitlines()] if line.startswith("| ")]
    tests = ["pp8", "tg4", "pp8 @ d100", "tg4 @ d100"]
    assert rows == [[f"| {t}", test] for t in (1, 2) for test in tests]
    after = rest.split("\n\n", 1)[1].splitlines()
    assert [line.split(":")[0] for line in after] == ["read bandwidth, 1 thread", "read bandwidth, 2 threads"]
    assert all("GB/s; the decode ceiling for" in line and line.endswith(" t/s") for line in after)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "0"], "--batch takes comma-separated whole numbers >= 1"),
        (["--batch", "2,-1"], "--batch takes comma-separated whole numbers >= 1"),
        (["-t", "1,x"], "--threads takes comma-separated whole numbers"),
        (["-p", "-5"], "--n-prompt takes comma-separated whole numbers >= 0"),
        (["-r", "0"], "--repetitions"),
        (["-t", "2,100000"], "threads must be between 1 and 512, not 100000"),
        (["-p", "129"], "--n-prompt 129 is longer than the model's context of 128 tokens"),
        (["-p", "8", "-n", "4,200"], "--n-gen 200 is longer than the model's context of 128 tokens"),
        (["-d", "-1"], "--n-depth takes comma-separated whole numbers >= 0"),
        (["-p", "100", "-d", "0,40"], "--n-prompt 100 after --n-depth 40 is longer than the model's context of 128 tokens"),
    ],
)
def test_bench_rejects_bad_options_in_one_line(args, message):
    out = run_cli("bench", "-m", str(TINY_GPT2), "-p", "8", "-n", "1", *args)
    assert out.returncode != 0
    err = out.stderr.decode()
    assert message in err and "Traceback" not in err
    assert out.stdout == b""
