"""The layer rules of heritage/ARCHITECTURE.md ("Layers"), checked on every module's imports.

Imports are read with ``ast`` from the source, function-local ones included (a lazy import is still
a dependency): ``import heritage.x``, ``from heritage import x``, ``from heritage.x import y``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "heritage"

# Lowest first. A module may import modules of its own layer or of lower ones, never of a higher one.
LAYERS: list[set[str]] = [
    {"errors"},
    {"taxonomy", "fileio", "registry"},
    {"vocabulary", "reference"},
    {"synth", "ingest", "scale", "augment", "splits", "weights", "stats", "overlays", "progress", "slurm"},
    {"data", "models", "losses", "metrics", "tiling"},
    {"config"},
    {"engine", "runs", "resampling", "provenance"},
    {"train", "predict"},
    {"report", "gallery", "publish", "poc_views"},
    {"paper"},
    {"cli", "__main__"},
]
# The generic SLURM scheduler imports nothing of the pipeline, only these leaf modules.
SLURM_MAY_IMPORT = {"errors", "fileio"}
# Known violations, each still to be fixed (issue 13). Every one is a function-local import; the test
# fails when one of them disappears, so that it is taken off this list.
EXCEPTIONS: dict[tuple[str, str], str] = {
}


def heritage_imports(path: Path) -> set[str]:
    """The heritage modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("heritage.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
            elif node.module == "heritage":
                found |= {alias.name for alias in node.names}
            elif node.module and node.module.startswith("heritage."):
                found.add(node.module.split(".")[1])
    return found - {path.stem}


def module_files(name: str) -> list[Path]:
    """The source files of module ``name``: ``name.py``, or every file of the subpackage ``name/``."""
    folder = PACKAGE / name
    return sorted(folder.glob("**/*.py")) if folder.is_dir() else [PACKAGE / f"{name}.py"]


# A subpackage (a folder with __init__.py, e.g. report/) is one module here: its layer is its files' layer,
# its imports are theirs together; it imports itself absolutely (from heritage.report.x import y).
MODULES = sorted([path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"]
                 + [path.parent.name for path in PACKAGE.glob("*/__init__.py")])
GRAPH = {name: set().union(*(heritage_imports(path) for path in module_files(name))) - {name} for name in MODULES}


def layer_of(module: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if module in layer)


def test_the_import_reader_sees_function_local_and_relative_imports(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import os\nimport heritage.fileio\nfrom heritage import errors, taxonomy as t\n"
                      "def f():\n    from heritage.models import build_model\n    from . import splits\n"
                      "    from .data import x\n")
    assert heritage_imports(source) == {"fileio", "errors", "taxonomy", "models", "splits", "data"}


def test_every_module_has_one_layer():
    placed = [module for layer in LAYERS for module in layer]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    missing = sorted(set(MODULES) - set(placed))
    assert not missing, f"modules without a layer (add them to LAYERS and ARCHITECTURE.md): {missing}"
    assert not set(placed) - set(MODULES), f"layers name modules that do not exist: {set(placed) - set(MODULES)}"


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_higher_layer(module):
    higher = sorted(dep for dep in GRAPH[module] if layer_of(dep) > layer_of(module)
                    and (module, dep) not in EXCEPTIONS)
    assert not higher, f"{module} (layer {layer_of(module)}) imports higher layers: " + ", ".join(
        f"{dep} (layer {layer_of(dep)})" for dep in higher)


def test_no_import_cycles():
    graph = {module: {dep for dep in deps if (module, dep) not in EXCEPTIONS} for module, deps in GRAPH.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_the_slurm_scheduler_imports_nothing_of_the_pipeline():
    assert GRAPH["slurm"] <= SLURM_MAY_IMPORT, f"slurm imports {sorted(GRAPH['slurm'] - SLURM_MAY_IMPORT)}"


def test_every_listed_exception_is_still_an_import():
    # A fixed violation leaves the list, so the rules tighten again.
    stale = [edge for edge in EXCEPTIONS if edge[1] not in GRAPH.get(edge[0], set())]
    assert not stale, f"no longer imported, remove from EXCEPTIONS: {stale}"
