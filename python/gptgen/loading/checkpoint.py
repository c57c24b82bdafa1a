"""Hugging Face checkpoint directories: config.json plus safetensors weights (one file, or
shards listed in model.safetensors.index.json), mapped onto the engine's tensor names."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import GptgenError
from ..sampling import SamplingParams
from .hf_config import HFConfig, read_json
from .safetensors import read_safetensors
from .spec import ModelSpec, TensorView


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_checkpoint(directory: Path) -> ModelSpec:
    config = HFConfig(directory / "config.json")
    model_type = config.get("model_type")
    if model_type == "gpt2":
        return _gpt2_spec(directory, config, read_checkpoint_tensors(directory))
    if model_type == "llama":
        return _llama_spec(directory, config, read_checkpoint_tensors(directory))
    raise GptgenError(f"{directory}: model_type {model_type!r} is not supported (supported: gpt2, llama)")


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding the checkpoint's weights."""
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index_path = directory / "model.safetensors.index.json"
    if index_path.is_file():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise GptgenError(f"{index_path}: weight_map must map tensor names to file names")
        files = []
        for name in sorted(set(weight_map.values())):
            shard = directory / name
            if Path(name).name != name or not shard.is_file():
                raise GptgenError(f"{index_path}: shard {name!r} is not a file in {directory}")
            files.append(shard)
        return files
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise GptgenError(
            f"{directory}: only safetensors weights are loaded (PyTorch .bin files are pickles "
            "that can run code); convert them to model.safetensors first"
        )
    raise GptgenError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def read_checkpoint_tensors(directory: Path) -> dict[str, TensorView]:
    tensors: dict[str, TensorView] = {}
    for path in weight_files(directory):
        for name, view in read_safetensors(path).items():
            if name in tensors:
                raise GptgenError(f"{directory}: tensor {name} appears in more than one shard")
            tensors[name] = view
    return tensors


# Hugging Face GPT-2 names (after any "transformer." prefix) -> engine names and layouts.
# Conv1D weights are stored [in, out].
_GPT2_GLOBAL = {
    "wte.weight": ("token_embd.weight", "out_in"),
    "wpe.weight": ("position_embd.weight", "out_in"),
    "ln_f.weight": ("output_norm.weight", "out_in"),
    "ln_f.bias": ("output_norm.bias", "out_in"),
}
_GPT2_BLOCK = {
    "ln_1.weight": ("attn_norm.weight", "out_in"),
    "ln_1.bias": ("attn_norm.bias", "out_in"),
    "attn.c_attn.weight": ("attn_qkv.weight", "in_out"),
    "attn.c_attn.bias": ("attn_qkv.bias", "out_in"),
    "attn.c_proj.weight": ("attn_output.weight", "in_out"),
    "attn.c_proj.bias": ("attn_output.bias", "out_in"),
    "ln_2.weight": ("ffn_norm.weight", "out_in"),
    "ln_2.bias": ("ffn_norm.bias", "out_in"),
    "mlp.c_fc.weight": ("ffn_up.weight", "in_out"),
    "mlp.c_fc.bias": ("ffn_up.bias", "out_in"),
    "mlp.c_proj.weight": ("ffn_down.weight", "in_out"),
    "mlp.c_proj.bias": ("ffn_down.bias", "out_in"),
}
# Causal-mask buffers saved by old transformers versions: not weights.
_GPT2_IGNORED = re.compile(r"h\.\d+\.attn\.(masked_)?bias")
_GPT2_BLOCK_NAME = re.compile(r"h\.(\d+)\.(.+)")


def _gpt2_spec(directory: Path, config: HFConfig, hf_tensors: dict[str, TensorView]) -> ModelSpec:
    activation = config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise GptgenError(f"{config.path}: activation_function {activation!r} is not supported (gelu_new)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if config.get(flag):
            raise GptgenError(f"{config.path}: {flag} = true is not supported")
    n_embd = config.positive_int("n_embd")
    n_head = config.positive_int("n_head")
    n_inner = config.get("n_inner")
    engine_config = {
        "n_vocab": config.positive_int("vocab_size"),
        "n_ctx": config.positive_int("n_positions"),
        "n_embd": n_embd,
        "n_layer": config.positive_int("n_layer"),
        "n_head": n_head,
        "n_kv_head": n_head,
        "n_ff": 4 * n_embd if n_inner is None else config.positive_int("n_inner"),
        "head_dim": n_embd // n_head,
        "norm_eps": config.positive_float("layer_norm_epsilon", 1e-5),
        "kv_cache": "f32",
    }
    if n_embd % n_head:
        raise GptgenError(f"{config.path}: n_embd {n_embd} is not divisible by n_head {n_head}")
    tied = config.get("tie_word_embeddings", True)
    tensors: dict[str, TensorView] = {}
    for hf_name, view in hf_tensors.items():
        name = hf_name.removeprefix("transformer.")
        if _GPT2_IGNORED.fullmatch(name) or (tied and name == "lm_head.weight"):
            continue
        target = _gpt2_target(name)
        if target is None:
            raise GptgenError(f"{directory}: unexpected tensor {hf_name} for a GPT-2 checkpoint")
        engine_name, layout = target
        tensors[engine_name] = TensorView(view.data, view.dtype, view.shape, layout)
    n_layer = engine_config["n_layer"]
    extra_layers = sorted({int(m.group(1)) for n in hf_tensors if (m := re.search(r"h\.(\d+)\.", n))} - set(range(n_layer)))
    if extra_layers:
        raise GptgenError(f"{directory}: weights have layer {extra_layers[0]} but config.json says n_layer = {n_layer}")
    return _spec("gpt2", directory, config, engine_config, tensors)


def _spec(arch: str, directory: Path, config: HFConfig, engine_config: dict, tensors: dict[str, TensorView]) -> ModelSpec:
    return ModelSpec(
        arch=arch,
        config=engine_config,
        tensors=tensors,
        path=directory,
        format="safetensors",
        eos_token_ids=_generation_ids(directory, config, "eos_token_id"),
        bos_token_id=next(iter(_generation_ids(directory, config, "bos_token_id")), None),
        sampling_defaults=_sampling_defaults(directory),
        chat_template=_chat_template(directory),
    )


# Hugging Face Llama names -> engine names (all nn.Linear, [out, in]).
_LLAMA_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LLAMA_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LLAMA_BLOCK_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)")


def _llama_spec(directory: Path, config: HFConfig, hf_tensors: dict[str, TensorView]) -> ModelSpec:
    if config.get("hidden_act", "silu") != "silu":
        raise GptgenError(f"{config.path}: hidden_act {config.get('hidden_act')!r} is not supported (silu)")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise GptgenError(f"{config.path}: {flag} = true is not supported")
    rope_parameters = config.get("rope_parameters") or {}
    rope_scaling = config.get("rope_scaling") or {}
    rope_type = rope_parameters.get("rope_type", rope_scaling.get("rope_type", rope_scaling.get("type", "default")))
    if rope_type != "default":
        raise GptgenError(f"{config.path}: RoPE scaling {rope_type!r} is not supported")
    rope_base = rope_parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    if isinstance(rope_base, bool) or not isinstance(rope_base, (int, float)) or not rope_base > 0:
        raise GptgenError(f"{config.path}: rope_theta must be a positive number, not {rope_base!r}")
    n_embd = config.positive_int("hidden_size")
    n_head = config.positive_int("num_attention_heads")
    head_dim = config.positive_int("head_dim", n_embd // n_head)
    engine_config = {
        "n_vocab": config.positive_int("vocab_size"),
        "n_ctx": config.positive_int("max_position_embeddings"),
        "n_embd": n_embd,
        "n_layer": config.positive_int("num_hidden_layers"),
        "n_head": n_head,
        "n_kv_head": config.positive_int("num_key_value_heads", n_head),
        "n_ff": config.positive_int("intermediate_size"),
        "head_dim": head_dim,
        "norm_eps": config.positive_float("rms_norm_eps", 1e-6),
        "kv_cache": "f32",
        "rope_base": float(rope_base),
        "rope_dims": head_dim,
        "rope_pairing": "halves",
    }
    tied = config.get("tie_word_embeddings", False)
    tensors: dict[str, TensorView] = {}
    for hf_name, view in hf_tensors.items():
        if tied and hf_name == "lm_head.weight":
            continue
        name = _LLAMA_GLOBAL.get(hf_name)
        match = _LLAMA_BLOCK_NAME.fullmatch(hf_name)
        if match and match.group(2) in _LLAMA_BLOCK:
            layer = int(match.group(1))
            if layer >= engine_config["n_layer"]:
                raise GptgenError(f"{directory}: weights have layer {layer} but config.json says num_hidden_layers = {engine_config['n_layer']}")
            name = f"blk.{layer}.{_LLAMA_BLOCK[match.group(2)]}"
        if name is None:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue  # a cached buffer, recomputed by the engine
            raise GptgenError(f"{directory}: unexpected tensor {hf_name} for a Llama checkpoint")
        tensors[name] = view
    return _spec("llama", directory, config, engine_config, tensors)


def _chat_template(directory: Path) -> str | None:
    """chat_template.jinja, else tokenizer_config.json's chat_template (a string, or a list of
    named templates of which "default" is used)."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_path = directory / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    template = read_json(config_path).get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _gpt2_target(name: str) -> tuple[str, str] | None:
    if name in _GPT2_GLOBAL:
        return _GPT2_GLOBAL[name]
    if name == "lm_head.weight":
        return ("output.weight", "out_in")
    match = _GPT2_BLOCK_NAME.fullmatch(name)
    if match and match.group(2) in _GPT2_BLOCK:
        engine_name, layout = _GPT2_BLOCK[match.group(2)]
        return (f"blk.{match.group(1)}.{engine_name}", layout)
    return None


def _sampling_defaults(directory: Path) -> SamplingParams:
    """generation_config.json read with transformers' semantics: greedy unless do_sample is true,
    then its temperature, top_k and top_p (transformers' defaults 1.0, 50, 1.0 when absent)."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return SamplingParams(temperature=0.0)
    gen = HFConfig(path)
    if not gen.get("do_sample", False):
        return SamplingParams(temperature=0.0)
    top_k = gen.get("top_k", 50)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise GptgenError(f"{path}: top_k must be a non-negative integer, not {top_k!r}")
    params = SamplingParams(temperature=gen.positive_float("temperature", 1.0), top_k=top_k, top_p=gen.positive_float("top_p", 1.0))
    try:
        params.validate()
    except GptgenError as e:
        raise GptgenError(f"{path}: {e}") from None
    return params


def _generation_ids(directory: Path, config: HFConfig, key: str) -> list[int]:
    """A special token id from generation_config.json, else config.json."""
    generation_path = directory / "generation_config.json"
    if generation_path.is_file():
        ids = HFConfig(generation_path).token_ids(key)
        if ids:
            return ids
    return config.token_ids(key)
