"""stdin pipelines, batch records and process behaviour, through the installed entry point."""

from __future__ import annotations

import json
import signal
import subprocess

from conftest import TINY_GPT2, gptgen_command, run_cli

MODEL = ["-m", str(TINY_GPT2)]
GREEDY = ["-t", "0", "--ignore-eos"]


def test_argument_and_piped_stdin_are_combined_argument_first():
    combined = run_cli("generate", "Summarize:", *MODEL, "-n", "3", *GREEDY, "--json", input=b"some text\n")
    whole = run_cli("generate", "Summarize:\nsome text", *MODEL, "-n", "3", *GREEDY, "--json")
    assert json.loads(combined.stdout)["prompt_tokens"] == json.loads(whole.stdout)["prompt_tokens"]


def test_each_line_gives_one_record_per_line_in_order_equal_to_single_runs():
    prompts = ["Once upon a time", "The quick brown fox", "", "Hello, world!"]
    out = run_cli("generate", "--each-line", *MODEL, "-n", "6", *GREEDY, input="\n".join(prompts).encode() + b"\n")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["index"] for r in records] == list(range(len(prompts)))
    for prompt, record in zip(prompts, records):
        single = json.loads(run_cli("generate", prompt, *MODEL, "-n", "6", *GREEDY, "--json").stdout)
        assert record["prompt"] == prompt
        assert record["tokens"] == single["tokens"] and record["text"] == single["text"]


def test_jsonl_bad_lines_become_error_records_and_the_rest_complete():
    lines = [
        json.dumps({"prompt": "Hello", "max_tokens": 3, "temperature": 0, "ignore_eos": True}),
        "{not json",
        json.dumps({"prompt": "Hi", "max_tokenz": 3}),
        json.dumps({"prompt": 5}),
        json.dumps({"prompt": "Hi", "max_tokens": 2, "temperature": 0, "stop": ["zzz"]}),
        json.dumps({"prompt": "Hi", "max_tokens": 100000}),
    ]
    out = run_cli("generate", "--jsonl", *MODEL, input=("\n".join(lines) + "\n").encode())
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert len(records) == 6 and [r["index"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert len(records[0]["tokens"]) == 3 and "error" not in records[0]
    assert "not valid JSON" in records[1]["error"]
    assert "unknown option" in records[2]["error"]
    assert "prompt" in records[3]["error"]
    assert len(records[4]["tokens"]) == 2
    assert "context" in records[5]["error"]


def test_num_return_sequences_json_list():
    out = run_cli("generate", "Hi", *MODEL, "-n", "5", "-t", "1.0", "--seed", "3", "--num-return-sequences", "3", "--ignore-eos", "--json")
    results = json.loads(out.stdout)
    assert isinstance(results, list) and len(results) == 3
    assert all(len(r["tokens"]) == 5 for r in results)


def test_num_return_sequences_as_text_are_separated_unambiguously():
    args = ["generate", "Hi", *MODEL, "-n", "6", "-t", "1.0", "--seed", "3", "--num-return-sequences", "3", "--ignore-eos"]
    texts = [r["text"] for r in json.loads(run_cli(*args, "--json").stdout)]
    marked = run_cli(*args).stdout.decode()
    assert marked == texts[0] + "".join(f"\n\n--- {i} ---\n{t}" for i, t in enumerate(texts[1:], start=2)) + "\n"
    assert run_cli(*args, "--null").stdout.decode().split("\0") == [*texts, ""]
    assert run_cli(*args, "-0").stdout == run_cli(*args, "--null").stdout


def test_broken_pipe_ends_quietly():
    command = f"{' '.join(gptgen_command())} generate Hello -m {TINY_GPT2} -n 120 -t 0 --ignore-eos | head -c 5"
    out = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120)
    assert out.returncode == 0
    assert b"Traceback" not in out.stderr and b"Error" not in out.stderr


def test_ctrl_c_keeps_what_was_written_and_exits_130():
    process = subprocess.Popen(
        [*gptgen_command(), "generate", *MODEL, "-n", "100000", "--truncate", *GREEDY, "--each-line"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: readline() must not take bytes that communicate() should see
        # A parent started in the background may ignore SIGINT, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Plenty of lines; interrupt once the first records are out.
    process.stdin.write(b"Hello\n" * 5000)
    process.stdin.close()
    process.stdin = None
    first = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert b"Traceback" not in err
    # Records end with "\n" (text may hold other line separators, such as U+2028).
    for line in (first + rest).decode().split("\n")[:-1]:
        json.loads(line)  # every record that was written is complete
    assert (first + rest).endswith(b"\n")


def test_no_color_and_plain_stdout_when_piped():
    out = run_cli("info", *MODEL, env={"NO_COLOR": "1"})
    assert b"\x1b[" not in out.stdout
    out = run_cli("generate", "Hello", *MODEL, "-n", "4", *GREEDY)
    assert b"\x1b[" not in out.stdout and out.stderr == b""


def test_bad_option_values_are_one_line_usage_errors():
    for args, fragment in [
        (["--min-p", "2"], "min-p"),
        (["--typical-p", "0"], "typical-p"),
        (["--logit-bias", "abc"], "--logit-bias"),
        (["--repetition-penalty", "0"], "repetition-penalty"),
        (["--max-length", "2", "-n", "3"], "not both"),
    ]:
        out = run_cli("generate", "Hello", *MODEL, *args)
        assert out.returncode == 2, args
        assert out.stderr.decode().startswith("error: ") and fragment in out.stderr.decode(), out.stderr


def _each_line_process(lines: int, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [*gptgen_command(), "generate", *MODEL, "-n", "20", *GREEDY, "--each-line", "--batch-size", "2", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    process.stdin.write(b"Hello there\n" * lines)
    process.stdin.close()
    process.stdin = None
    return process


def test_batch_killed_mid_run_leaves_only_complete_records():
    process = _each_line_process(5000)
    first = process.stdout.readline()
    process.kill()
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    output = first + rest
    assert output.endswith(b"\n")
    records = [json.loads(line) for line in output.decode().split("\n")[:-1]]
    assert [r["index"] for r in records] == list(range(len(records)))
    assert all(len(r["tokens"]) == 20 for r in records)


def test_batch_into_a_closed_pipe_stops_quietly_after_complete_records():
    command = f"printf 'Hello there\\n%.0s' $(seq 200) | {' '.join(gptgen_command())} generate -m {TINY_GPT2} -n 20 -t 0 --ignore-eos --each-line --batch-size 2 | head -n 3; echo \"status=${{PIPESTATUS[1]}}\" >&2"
    out = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120)
    records = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2]
    assert out.stderr.decode().strip() == "status=0", out.stderr
