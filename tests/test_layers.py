"""The package's layers hold: imports point downward only, and no modules import in a circle.

Layers, top to bottom (a module may import its own layer and those listed for it):

* ``cli``: anything; nothing imports it (``__main__`` belongs to it).
* ``eval`` and ``train``: the core and the floor, never each other.
* ``video``: the floor only; it never sees the model.
* core (``flow backbone routing tiling cost weights api kernels``, the package face): core,
  floor.
* floor (``frames metrics degradation signals``): nothing of skipvsr.

The check reads the source with :mod:`ast` (imports inside functions and ``TYPE_CHECKING``
blocks count too), so it needs no import side effects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "skipvsr"
CORE = {"flow", "backbone", "routing", "tiling", "cost", "weights", "api", "kernels"}
FLOOR = {"frames", "metrics", "degradation", "signals"}
WINGS = {"cli", "eval", "train", "video"}
ALLOWED = {
    "floor": {"floor"},
    "core": {"core", "floor"},
    "video": {"video", "floor"},
    "eval": {"eval", "core", "floor"},
    "train": {"train", "core", "floor"},
    "cli": {"cli", "video", "eval", "train", "core", "floor"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a dotted ``skipvsr`` module name (``KeyError`` if it has none)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in WINGS:
        return top
    if top == "__main__":
        return "cli"
    if top in CORE or top == "__init__":
        return "core"
    if top in FLOOR:
        return "floor"
    raise KeyError(f"{module}: in no layer; add it to CORE, FLOOR or a wing in {__file__}")


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The ``skipvsr`` modules that ``module`` (source at ``path``) imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:  # `from skipvsr import cost` imports the module skipvsr.cost
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m == "skipvsr" or m.startswith("skipvsr.")}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {m: imports(m, p, set(found)) for m, p in found.items()}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """One line per import that goes against :data:`ALLOWED`."""
    return [
        f"{src} ({layer(src)}) imports {dst} ({layer(dst)})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if layer(dst) not in ALLOWED[layer(src)]
    ]


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` as a list of modules, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


def test_imports_follow_the_layers():
    assert violations(import_graph()) == []


def test_no_import_circles():
    assert cycle(import_graph()) == []


def test_the_graph_is_read():
    graph = import_graph()
    assert "skipvsr.cli.upscale" in graph["skipvsr.cli.main"]
    assert {"skipvsr.cost", "skipvsr.metrics"} <= graph["skipvsr.eval.evaluate"]
    assert "skipvsr.frames" in graph["skipvsr.video.io"]
    assert graph["skipvsr.frames"] == set()


@pytest.mark.parametrize(
    "src, dst",
    [
        ("skipvsr.video.streaming", "skipvsr.api"),  # video sees the model
        ("skipvsr.eval.evaluate", "skipvsr.train.loop"),  # wings import each other
        ("skipvsr.train.loop", "skipvsr.cli.args"),  # anything imports the cli
        ("skipvsr.routing", "skipvsr.video.io"),  # the core climbs to a wing
        ("skipvsr.frames", "skipvsr.cost"),  # the floor climbs to the core
    ],
)
def test_the_checker_flags_a_bad_import(src, dst):
    assert violations({src: {dst}}) == [f"{src} ({layer(src)}) imports {dst} ({layer(dst)})"]


def test_the_checker_finds_circles_and_reads_relative_imports(tmp_path):
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []
    src = tmp_path / "x.py"
    src.write_text("from . import io\nfrom ..api import load\nimport skipvsr.frames as f\n")
    known = {"skipvsr.video.io"}
    found = imports("skipvsr.video.x", src, known)
    assert found == {"skipvsr.video.io", "skipvsr.api", "skipvsr.frames"}
    assert violations({"skipvsr.video.x": found}) == [
        "skipvsr.video.x (video) imports skipvsr.api (core)"
    ]
