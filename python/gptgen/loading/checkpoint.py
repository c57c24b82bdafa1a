"""Hugging Face checkpoint directories: config.json plus safetensors weights (one file, or
shards listed in model.safetensors.index.json), mapped onto the engine's tensor names."""

from __future__ import annotations

from pathlib import Path

from .. import families
from ..errors import GptgenError
from ..options import SamplingParams
from .hf_config import HFConfig, read_json
from .safetensors import read_safetensors
from .spec import ModelSpec, TensorView


def is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def load_checkpoint(directory: Path) -> ModelSpec:
    config = HFConfig(directory / "config.json")
    model_type = config.get("model_type")
    family = families.by_model_type(model_type)
    if family is None or family.hf_config is None or family.hf_names is None:
        raise GptgenError(f"{directory}: model_type {model_type!r} is not supported (supported: {', '.join(families.model_types())})")
    engine_config = family.hf_config(config)
    tied = config.get("tie_word_embeddings", family.hf_tied_default)
    tensors: dict[str, TensorView] = {}
    for hf_name, view in read_checkpoint_tensors(directory).items():
        target = family.hf_names.target(hf_name)
        if target is None:
            raise GptgenError(f"{directory}: unexpected tensor {hf_name} for a {family.name} checkpoint")
        name, layout, layer = target
        if not name or (tied and name == "output.weight"):
            continue  # a buffer, or a copy of the tied embedding
        if layer is not None and layer >= engine_config.n_layer:
            key = config.size_keys.get("n_layer", "the layer count")
            raise GptgenError(f"{directory}: weights have layer {layer} but config.json says {key} = {engine_config.n_layer}")
        tensors[name] = TensorView(view.data, view.dtype, view.shape, layout)
    return ModelSpec(
        arch=family.name,
        config=engine_config,
        tensors=tensors,
        path=directory,
        format="safetensors",
        eos_token_ids=_generation_ids(directory, config, "eos_token_id"),
        bos_token_id=next(iter(_generation_ids(directory, config, "bos_token_id")), None),
        sampling_defaults=_sampling_defaults(directory),
        chat_template=_chat_template(directory) or family.chat_template,
    )


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


def _sampling_defaults(directory: Path) -> SamplingParams:
    """The model's generation defaults: generation_config.json read with transformers' semantics,
    greedy unless do_sample is true, then its temperature, top_k and top_p (transformers'
    defaults 1.0, 50, 1.0 when absent). The parameters it leaves unset take llama.cpp's."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return SamplingParams(temperature=0.0)
    gen = HFConfig(path)
    if not gen.get("do_sample", False):
        return SamplingParams(temperature=0.0)
    top_k = gen.get("top_k", 50)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise GptgenError(f"{path}: top_k must be a non-negative integer, not {top_k!r}")
    temperature, top_p = gen.positive_float("temperature", 1.0), gen.positive_float("top_p", 1.0)
    try:  # SamplingParams checks its values when made
        return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    except GptgenError as e:
        raise GptgenError(f"{path}: {e}") from None


def _generation_ids(directory: Path, config: HFConfig, key: str) -> list[int]:
    """A special token id from generation_config.json, else config.json."""
    generation_path = directory / "generation_config.json"
    if generation_path.is_file():
        ids = HFConfig(generation_path).token_ids(key)
        if ids:
            return ids
    return config.token_ids(key)
