"""The package's modules import each other without cycles: every import statement of every
module under python/gptgen, read with `ast` (module level, inside functions, and under `if
TYPE_CHECKING:` alike; relative and absolute), is an edge, and the graph must be acyclic.

A module's edges go to the gptgen modules it names: `from . import x` to the submodule x when
there is one (else to the package), `from .a import b` to a.b when that is a module (else to
a), and importing a module inside a subpackage from outside it also runs the subpackage's
__init__ (an edge to it). A package's __init__ runs before any module inside it, so that
implicit edge is not counted from inside: the root's only when a module names it (`from
gptgen import x`, `from .. import x` for an x that is not a submodule)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "gptgen"
ROOT = "gptgen"


def modules() -> dict[str, Path]:
    """Dotted name -> source file, for every module of the package: its .py files, and the
    compiled extension through its .pyi stub."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if path.suffix == ".py" or name not in found:
            found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that `name` (at `path`) imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()

    def add(module: str) -> None:
        # A module, else its nearest enclosing module (an attribute was imported from it).
        while module and module not in known:
            module = module.rpartition(".")[0]
        if not module or not (module == ROOT or module.startswith(ROOT + ".")):
            return
        targets.add(module)
        # Importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b (then
        # that __init__ is already running, as the root's always is).
        parent = module.rpartition(".")[0]
        while parent and not (name + ".").startswith(parent + "."):
            targets.add(parent)
            parent = parent.rpartition(".")[0]

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in known else source)
    targets.discard(name)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] if the graph has one (depth-first search), else None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_imports_are_read_at_every_level(tmp_path):
    known = {f"{ROOT}.{m}": tmp_path / f"{m}.py" for m in ("a", "b", "c", "d", "sub")}
    known[f"{ROOT}.sub"] = tmp_path / "sub" / "__init__.py"
    known[f"{ROOT}.sub.e"] = tmp_path / "sub" / "e.py"
    source = tmp_path / "a.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .b import thing\n"
        "if TYPE_CHECKING:\n"
        "    from gptgen import c\n"
        "def f():\n"
        "    from .sub.e import g\n"
        "    import gptgen.d\n"
    )
    assert imports(f"{ROOT}.a", source, known) == {f"{ROOT}.b", f"{ROOT}.c", f"{ROOT}.d", f"{ROOT}.sub", f"{ROOT}.sub.e"}


def test_the_package_has_no_import_cycles():
    edges = graph()
    assert f"{ROOT}.cli" in edges and f"{ROOT}.model" in edges  # the package was found
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
