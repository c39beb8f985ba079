"""The package reads one way, bottom-up: every import among fastpose's modules (inside functions too) points to a lower
layer, there is no import circle, no module imports another's private name, and nothing edits sys.path.

LAYERS is the picture of the README's Development section: a module may import only modules of lower layers (and of
its own layer, as long as those imports form no circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Bottom to top. `fastpose.kernels.*` is the repository's kernels/ folder, installed as fastpose.kernels.
LAYERS = [
    ["fastpose", "fastpose.errors", "fastpose.atomic", "fastpose.workers", "fastpose.kernels",
     "fastpose.kernels._common"],
    ["fastpose.kernels.targets", "fastpose.kernels.pairwise", "fastpose.kernels.losses", "fastpose.kernels._multicut"],
    ["fastpose.config", "fastpose.decode", "fastpose.draw", "fastpose.plots", "fastpose.device", "fastpose.metrics",
     "fastpose.weights", "fastpose.tfckpt", "fastpose.video", "fastpose.tracks"],
    ["fastpose.model"],
    ["fastpose.shards", "fastpose.tfweights"],
    ["fastpose.convert", "fastpose.convert.common", "fastpose.convert.synth"],
    ["fastpose.convert.mat", "fastpose.convert.dlc", "fastpose.convert.mpii", "fastpose.convert.coco",
     "fastpose.checkpoint", "fastpose.pipeline"],
    ["fastpose.images", "fastpose.dataset", "fastpose.baselines", "fastpose.tfimport", "fastpose.recipe"],
    ["fastpose.pairwise"],
    ["fastpose.assembly", "fastpose.export"],
    ["fastpose.train", "fastpose.evaluate", "fastpose.predict"],
    ["fastpose.analyze"],
    ["fastpose.bench", "fastpose.demo"],
    ["fastpose.cli"],
    ["fastpose.__main__"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


COMPILED = {"fastpose.kernels._multicut": REPO / "kernels" / "multicut.cpp"}  # built by CMakeLists.txt


def _module_files() -> dict[str, Path]:
    files = dict(COMPILED)
    for path in sorted((REPO / "fastpose").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    for path in sorted((REPO / "kernels").glob("*.py")):
        stem = path.stem
        files["fastpose.kernels" if stem == "__init__" else f"fastpose.kernels.{stem}"] = path
    return files


def _imports(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """(imported fastpose module, imported names, line) of every import in the file, function bodies included."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("fastpose")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            if module.startswith("fastpose"):
                found.append((module, [a.name for a in node.names], node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    files = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for module, names, _ in ([] if name in COMPILED else _imports(path, name)):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in files] or [module]
            graph[name].update(t for t in targets if t != name)
    return graph


def test_every_module_has_a_layer():
    assert sorted(set(_module_files()) - set(LAYER)) == []


def test_imports_only_point_down_and_form_no_circle():
    files = _module_files()
    upward = []
    for name, path in files.items():
        for module, names, line in ([] if name in COMPILED else _imports(path, name)):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in files] or [module]
            for target in targets:
                if target != name and LAYER.get(target, -1) > LAYER[name]:
                    upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert upward == []
    graph, state, cycle = _edges(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle.append(stack + [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycle == []


def test_no_module_imports_a_private_name_of_another():
    files = _module_files()
    private = []
    for name, path in files.items():
        for module, names, line in ([] if name in COMPILED else _imports(path, name)):
            private += [f"{path.relative_to(REPO)}:{line} {module}.{n}" for n in names
                        if n.startswith("_") and f"{module}.{n}" not in files and n != "__version__"]
    assert private == []


@pytest.mark.parametrize("folder", ["fastpose", "kernels", "tests", "tools"])
def test_nothing_edits_sys_path(folder):
    edits = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                    and node.value.id == "sys"):
                edits.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert edits == []


def test_the_checks_can_fail(tmp_path):
    """The walker sees an import hidden in a function and a relative import (what the checks above rely on)."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from fastpose.train import train\n    from . import shards\n")
    assert [(m, n) for m, n, _ in _imports(path, "fastpose.mod")] == [("fastpose.train", ["train"]),
                                                                     ("fastpose", ["shards"])]
