"""gptgen against Hugging Face transformers on the tiny GPT-2 fixture (expected.* were produced by
transformers; see fixtures/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_GPT2

from gptgen.generate import GenerationRequest, generate
from gptgen.sampling import SamplingParams

PROMPTS = range(4)


@pytest.mark.parametrize("i", PROMPTS)
def test_tokenization_matches_transformers(tiny_gpt2, tiny_gpt2_expected, i):
    expected, _ = tiny_gpt2_expected
    p = expected["prompts"][i]
    assert tiny_gpt2.tokenizer.encode(p["prompt"]) == p["ids"]


@pytest.mark.parametrize("i", PROMPTS)
def test_logits_match_transformers_at_every_position(tiny_gpt2, tiny_gpt2_expected, i):
    expected, arrays = tiny_gpt2_expected
    ids = expected["prompts"][i]["ids"]
    session = tiny_gpt2.new_session(len(ids))
    logits = session.forward(ids, all_logits=True)
    assert logits.shape == (len(ids), 50257)
    top_ids = arrays[f"p{i}_top10_ids"]
    np.testing.assert_allclose(np.take_along_axis(logits, top_ids, axis=1), arrays[f"p{i}_top10_logits"], atol=1e-4, rtol=0)
    # Our own top-10 must be the same tokens (ties aside, the order of the reference).
    ours = np.argsort(-logits, axis=1, kind="stable")[:, :10]
    assert (ours == top_ids).mean() > 0.99
    np.testing.assert_allclose(logits[-1], arrays[f"p{i}_logits_last"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("i", PROMPTS)
def test_greedy_tokens_match_transformers(tiny_gpt2, tiny_gpt2_expected, i):
    expected, _ = tiny_gpt2_expected
    p = expected["prompts"][i]
    request = GenerationRequest(p["ids"], max_tokens=24, sampling=SamplingParams(temperature=0), ignore_eos=True)
    assert generate(tiny_gpt2, request).tokens == p["greedy24"]


def test_scalar_kernels_agree_with_transformers(tiny_gpt2_expected):
    """GPTGEN_FORCE_SCALAR=1 takes the scalar twin of every kernel, end to end."""
    expected, arrays = tiny_gpt2_expected
    p = expected["prompts"][1]
    script = (
        "import json, sys, gptgen, numpy as np\n"
        "from gptgen import _native\n"
        f"m = gptgen.load({str(TINY_GPT2)!r})\n"
        f"ids = {p['ids']!r}\n"
        "logits = m.new_session(len(ids)).forward(ids)[0]\n"
        "print(json.dumps({'kernel': _native.kernel_name(), 'logits': logits.tolist()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, env={"GPTGEN_FORCE_SCALAR": "1", "PATH": ""}
    )
    result = json.loads(out.stdout)
    assert result["kernel"] == "scalar"
    np.testing.assert_allclose(np.array(result["logits"]), arrays["p1_logits_last"], atol=1e-4, rtol=0)
