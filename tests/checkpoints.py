"""Test helpers, independent of gptgen's loaders: write Hugging Face GPT-2 checkpoint
directories with random weights, and compute GPT-2 logits with plain NumPy (float64).

The forward pass follows transformers' modeling_gpt2.py line by line; it shares no code with
the engine, so agreement between the two is evidence both are right.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

_ST_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def round_to_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as they will be stored, returned as float64."""
    values = values.astype(np.float32)
    if dtype == "f32":
        return values.astype(np.float64)
    if dtype == "f16":
        return values.astype(np.float16).astype(np.float64)
    if dtype == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(values)).astype(np.float64)
    raise ValueError(dtype)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even to the upper 16 bits of each float32."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def encode_tensor(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "f32":
        return values.astype("<f4").tobytes()
    if dtype == "f16":
        return values.astype("<f2").tobytes()
    return f32_to_bf16_bits(values).astype("<u2").tobytes()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str, pad_to: int = 8) -> None:
    """The safetensors layout written out by hand (the library cannot write bfloat16 from NumPy)."""
    header: dict[str, dict] = {}
    blobs = []
    offset = 0
    for name, values in tensors.items():
        blob = encode_tensor(values, dtype)
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(values.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % pad_to)
    path.write_bytes(len(header_bytes).to_bytes(8, "little") + header_bytes + b"".join(blobs))


def random_gpt2_weights(rng: np.random.Generator, *, n_vocab, n_ctx, n_embd, n_layer, n_ff) -> dict[str, np.ndarray]:
    """Hugging Face GPT-2 tensors (Conv1D weights [in, out]) with random float32 values."""

    def normal(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"wte.weight": normal(n_vocab, n_embd), "wpe.weight": normal(n_ctx, n_embd)}
    for i in range(n_layer):
        p = f"h.{i}."
        w[p + "ln_1.weight"] = 1 + normal(n_embd, scale=0.1)
        w[p + "ln_1.bias"] = normal(n_embd, scale=0.1)
        w[p + "attn.c_attn.weight"] = normal(n_embd, 3 * n_embd)
        w[p + "attn.c_attn.bias"] = normal(3 * n_embd, scale=0.1)
        w[p + "attn.c_proj.weight"] = normal(n_embd, n_embd)
        w[p + "attn.c_proj.bias"] = normal(n_embd, scale=0.1)
        w[p + "ln_2.weight"] = 1 + normal(n_embd, scale=0.1)
        w[p + "ln_2.bias"] = normal(n_embd, scale=0.1)
        w[p + "mlp.c_fc.weight"] = normal(n_embd, n_ff)
        w[p + "mlp.c_fc.bias"] = normal(n_ff, scale=0.1)
        w[p + "mlp.c_proj.weight"] = normal(n_ff, n_embd)
        w[p + "mlp.c_proj.bias"] = normal(n_embd, scale=0.1)
    w["ln_f.weight"] = 1 + normal(n_embd, scale=0.1)
    w["ln_f.bias"] = normal(n_embd, scale=0.1)
    return w


def write_gpt2_checkpoint(
    directory: Path,
    weights: dict[str, np.ndarray],
    *,
    n_head: int,
    dtype: str = "f32",
    shards: int = 1,
    n_inner: int | None = None,
    extra_config: dict | None = None,
) -> None:
    """A checkpoint directory as transformers would save it (config.json + safetensors)."""
    directory.mkdir(parents=True, exist_ok=True)
    n_vocab, n_embd = weights["wte.weight"].shape
    n_layer = len({k.split(".")[1] for k in weights if k.startswith("h.")})
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": n_vocab,
        "n_positions": weights["wpe.weight"].shape[0],
        "n_embd": n_embd,
        "n_layer": n_layer,
        "n_head": n_head,
        "n_inner": n_inner,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "eos_token_id": n_vocab - 1,
        "bos_token_id": n_vocab - 1,
        "tie_word_embeddings": "lm_head.weight" not in weights,
        **(extra_config or {}),
    }
    (directory / "config.json").write_text(json.dumps(config))
    names = list(weights)
    if shards == 1:
        write_safetensors(directory / "model.safetensors", weights, dtype)
        return
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: weights[n] for n in names[s::shards]}
        write_safetensors(directory / file, part, dtype)
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gpt2_logits(weights: dict[str, np.ndarray], n_head: int, tokens: list[int], eps: float = 1e-5) -> np.ndarray:
    """Logits [len(tokens), n_vocab] of a GPT-2 with these (float64) weights, full causal attention."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    n = len(tokens)
    x = w["wte.weight"][tokens] + w["wpe.weight"][:n]
    n_embd = x.shape[1]
    hd = n_embd // n_head
    n_layer = len({k.split(".")[1] for k in w if k.startswith("h.")})
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for i in range(n_layer):
        p = f"h.{i}."
        h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=1)
        heads = []
        for hh in range(n_head):
            cols = slice(hh * hd, (hh + 1) * hd)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(hd) + mask
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            heads.append((scores / scores.sum(axis=1, keepdims=True)) @ v[:, cols])
        attn = np.concatenate(heads, axis=1)
        x = x + attn @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        x = x + _gelu_new(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]) @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = _layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], eps)
    head = w.get("lm_head.weight", w["wte.weight"])
    return x @ head.T


def _rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x, n_heads, head_dim, base, pairing, inv_freq=None):
    """Rotates [n, n_heads * head_dim] by position; pairing "adjacent" (GGUF) or "halves" (HF);
    `inv_freq` [head_dim / 2]: each pair's angle per position (default base^(-2i/head_dim))."""
    n = x.shape[0]
    half = head_dim // 2
    if inv_freq is None:
        inv_freq = base ** (-np.arange(half) * 2.0 / head_dim)
    angles = np.arange(n)[:, None] * np.asarray(inv_freq, dtype=np.float64)[None]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    heads = x.reshape(n, n_heads, head_dim)
    if pairing == "adjacent":
        x0, x1 = heads[..., 0::2], heads[..., 1::2]
    else:
        x0, x1 = heads[..., :half], heads[..., half:]
    r0, r1 = x0 * cos - x1 * sin, x0 * sin + x1 * cos
    out = np.empty_like(heads)
    if pairing == "adjacent":
        out[..., 0::2], out[..., 1::2] = r0, r1
    else:
        out[..., :half], out[..., half:] = r0, r1
    return out.reshape(n, n_heads * head_dim)


def _project(h, w, name):
    """h @ W.T, plus the bias `name.bias` where the weights have one."""
    y = h @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def _head_norm(x, w, name, n_heads, eps):
    """Each head of x [n, n_heads * head_dim] RMS-normalised by `name.weight` [head_dim], where
    the weights have it."""
    if name + ".weight" not in w:
        return x
    n = x.shape[0]
    return _rms_norm(x.reshape(n, n_heads, -1), w[name + ".weight"], eps).reshape(n, -1)


def llama_logits(w: dict[str, np.ndarray], tokens: list[int], *, n_head, n_kv_head, rope_base, pairing, eps=1e-5, inv_freq=None) -> np.ndarray:
    """Logits [len(tokens), n_vocab] of a Llama with weights named the GGUF way ([out, in]);
    `inv_freq` as in `_rope` (scaled RoPE); Q/K/V biases (`blk.N.attn_q.bias`, ...) and per-head Q/K RMSNorms before RoPE
    (`blk.N.attn_q_norm.weight`, ...) apply where the weights have them."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    n = len(tokens)
    x = w["token_embd.weight"][tokens]
    head_dim = w["blk.0.attn_q.weight"].shape[0] // n_head
    n_layer = len({k.split(".")[1] for k in w if k.startswith("blk.")})
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], eps)
        q = _head_norm(_project(h, w, p + "attn_q"), w, p + "attn_q_norm", n_head, eps)
        k = _head_norm(_project(h, w, p + "attn_k"), w, p + "attn_k_norm", n_kv_head, eps)
        q = _rope(q, n_head, head_dim, rope_base, pairing, inv_freq)
        k = _rope(k, n_kv_head, head_dim, rope_base, pairing, inv_freq)
        v = _project(h, w, p + "attn_v")
        heads = []
        for hh in range(n_head):
            g = hh // (n_head // n_kv_head)
            qs, ks, vs = (m[:, a * head_dim : (a + 1) * head_dim] for m, a in ((q, hh), (k, g), (v, g)))
            scores = qs @ ks.T / math.sqrt(head_dim) + mask
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            heads.append(scores / scores.sum(axis=1, keepdims=True) @ vs)
        x = x + np.concatenate(heads, axis=1) @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], eps)
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T


def random_llama_weights(
    rng, *, n_vocab, n_embd, n_layer, n_head, n_kv_head, n_ff, qkv_bias=False, qk_norm=False, head_dim=None, post_norms=False
) -> dict[str, np.ndarray]:
    """GGUF-named Llama tensors ([out, in]) with random float32 values; with Q/K/V biases
    (Qwen2), per-head Q/K norm weights (Qwen3) and Gemma 3's norms after attention and after the
    feed-forward (`blk.N.post_attention_norm`, `blk.N.post_ffw_norm`) when asked; `head_dim`
    defaults to n_embd / n_head. Norm weights are 1 + small noise (GGUF's Gemma norms hold the
    converter's + 1 already)."""
    head_dim = head_dim or n_embd // n_head

    def normal(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"token_embd.weight": normal(n_vocab, n_embd), "output_norm.weight": 1 + normal(n_embd, scale=0.1)}
    for i in range(n_layer):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = 1 + normal(n_embd, scale=0.1)
        w[p + "attn_q.weight"] = normal(n_head * head_dim, n_embd)
        w[p + "attn_k.weight"] = normal(n_kv_head * head_dim, n_embd)
        w[p + "attn_v.weight"] = normal(n_kv_head * head_dim, n_embd)
        w[p + "attn_output.weight"] = normal(n_embd, n_head * head_dim)
        w[p + "ffn_norm.weight"] = 1 + normal(n_embd, scale=0.1)
        w[p + "ffn_gate.weight"] = normal(n_ff, n_embd)
        w[p + "ffn_up.weight"] = normal(n_ff, n_embd)
        w[p + "ffn_down.weight"] = normal(n_embd, n_ff)
        if qkv_bias:
            for part, rows in (("attn_q", n_head), ("attn_k", n_kv_head), ("attn_v", n_kv_head)):
                w[p + part + ".bias"] = normal(rows * head_dim, scale=1.0)
        if qk_norm:
            w[p + "attn_q_norm.weight"] = 1 + normal(head_dim, scale=0.1)
            w[p + "attn_k_norm.weight"] = 1 + normal(head_dim, scale=0.1)
        if post_norms:
            w[p + "post_attention_norm.weight"] = 1 + normal(n_embd, scale=0.1)
            w[p + "post_ffw_norm.weight"] = 1 + normal(n_embd, scale=0.1)
    return w


def llama_cpp_last_and_greedy(llm, prompt: list[int], n: int) -> tuple[np.ndarray, list[int]]:
    """For the fixture scripts: a llama_cpp.Llama (made with logits_all) run on `prompt`, its
    last-position logits and the n greedy tokens (argmax of its logits) after it."""
    llm.reset()
    llm.eval(prompt)
    last = np.array(llm.scores[len(prompt) - 1], dtype=np.float32)
    greedy = []
    for _ in range(n):
        greedy.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([greedy[-1]])
    return last, greedy


def byte_vocab() -> list[str]:
    """The 256 byte-level BPE symbols (GPT-2's bytes_to_unicode), in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_llama_gguf(
    path: Path,
    weights: dict[str, np.ndarray],
    *,
    n_head,
    n_kv_head,
    rope_base,
    n_ctx,
    types: dict[str, object],
    merges: list[str] | None = None,
    arch: str = "llama",
    linear_rope_factor: float | None = None,
    yarn: tuple[float, int] | None = None,
    head_dim: int | None = None,
    rms_eps: float = 1e-5,
    sliding_window: int | None = None,
    sliding_window_pattern: int | None = None,
    rope_base_swa: float | None = None,
    spm_vocab: tuple[list[str], list[float], list[int]] | None = None,
    longrope: tuple[int, float] | None = None,
) -> dict[str, np.ndarray]:
    """A GGUF file of a Llama-shaped model (architecture `arch`) written with gguf-py's
    GGUFWriter; `types` maps tensor names to gguf.GGMLQuantizationType (default F32). Returns
    the weights as stored (dequantized by gguf-py), for the reference.

    The vocabulary: the 256 byte-level BPE symbols, `<|end|>` (id 256, BOS and EOS) and, where the
    token embedding has more rows, control tokens `<|unusedN|>` up to its row count; or, with
    `spm_vocab` (tokens, scores, token types), a SentencePiece one (`tokenizer.ggml.model` llama,
    `<unk>` 0, `<s>` 1, `</s>` 2, add_bos, add_space_prefix). With `head_dim` (Gemma 3's way, as
    its converter writes it): `attention.key_length` / `value_length` and no
    `rope.dimension_count` (llama.cpp then rotates all of head_dim). `sliding_window`,
    `sliding_window_pattern` and `rope_base_swa` write `attention.sliding_window`,
    `attention.sliding_window_pattern` and `rope.freq_base_swa`; `longrope` (original context
    length, attention factor) `rope.scaling.original_context_length` and `rope.scaling.attn_factor`
    (Phi-3's; its factors are the tensors `rope_factors_long` / `rope_factors_short`). n_ff is read
    from ffn_down, so fused `blk.N.attn_qkv` / `blk.N.ffn_up` (gate | up) weights work too."""
    import gguf
    from gguf.quants import dequantize, quantize

    n_vocab, n_embd = weights["token_embd.weight"].shape
    vocab = byte_vocab() + ["<|end|>"]
    vocab += [f"<|unused{i}|>" for i in range(n_vocab - len(vocab))]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(len({k.split(".")[1] for k in weights if k.startswith("blk.")}))
    writer.add_feed_forward_length(weights["blk.0.ffn_down.weight"].shape[1])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv_head)
    writer.add_rope_freq_base(rope_base)
    if longrope is not None:
        # (original context length, attention factor), as llama.cpp's Phi-3 converter writes them
        writer.add_rope_scaling_orig_ctx_len(longrope[0])
        writer.add_rope_scaling_attn_factors(longrope[1])
    if head_dim is None:
        writer.add_rope_dimension_count(n_embd // n_head)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if rope_base_swa is not None:
        writer.add_rope_freq_base_swa(rope_base_swa)
    if sliding_window is not None:
        writer.add_sliding_window(sliding_window)
    if sliding_window_pattern is not None:
        writer.add_sliding_window_pattern(sliding_window_pattern)
    writer.add_layer_norm_rms_eps(rms_eps)
    if linear_rope_factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(linear_rope_factor)
    if yarn is not None:
        # (factor, original context length)
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(yarn[0])
        writer.add_rope_scaling_orig_ctx_len(yarn[1])
    if spm_vocab is None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(vocab)
        writer.add_token_types([1] * 256 + [3] * (len(vocab) - 256))
        writer.add_token_merges(merges or [])
        writer.add_eos_token_id(256)
        writer.add_bos_token_id(256)
    else:
        tokens, scores, token_types = spm_vocab
        assert len(tokens) == n_vocab
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(token_types)
        writer.add_unk_token_id(0)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(True)
        writer.add_add_space_prefix(True)
    stored = {}
    for name, values in weights.items():
        qtype = types.get(name, gguf.GGMLQuantizationType.F32)
        if qtype == gguf.GGMLQuantizationType.F32:
            data = values.astype(np.float32)
        elif qtype == gguf.GGMLQuantizationType.F16:
            data = values.astype(np.float16)
        else:
            data = quantize(values, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
        stored[name] = dequantize(data, qtype).reshape(values.shape) if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else data.astype(np.float32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def write_gpt2_gguf(path: Path, hf_weights: dict[str, np.ndarray], *, n_head: int, n_ctx: int) -> None:
    """The GPT-2 weights (Hugging Face names, Conv1D [in, out]) as a GGUF `gpt2` file, named and
    laid out as llama.cpp's converter writes them ([out, in], tied head as `output`)."""
    import gguf

    n_embd = hf_weights["wte.weight"].shape[1]
    n_layer = len({k.split(".")[1] for k in hf_weights if k.startswith("h.")})
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(hf_weights["h.0.mlp.c_fc.weight"].shape[1])
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(byte_vocab() + ["<|endoftext|>"])
    writer.add_token_types([1] * 256 + [3])
    writer.add_eos_token_id(256)
    names = {"wte.weight": "token_embd.weight", "wpe.weight": "position_embd.weight", "ln_f.weight": "output_norm.weight", "ln_f.bias": "output_norm.bias"}
    block = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for name, values in hf_weights.items():
        if name in names:
            target = names[name]
        else:
            _, layer, *part, kind = name.split(".")
            target = f"blk.{layer}.{block['.'.join(part)]}.{kind}"
            if kind == "weight" and values.ndim == 2:
                values = values.T  # Conv1D [in, out] -> [out, in]
        writer.add_tensor(target, np.ascontiguousarray(values, dtype=np.float32))
    writer.add_tensor("output.weight", hf_weights["wte.weight"].astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
