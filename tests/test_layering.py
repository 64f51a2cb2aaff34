"""The layer rules of heritage/ARCHITECTURE.md ("Layers"), checked on every module's imports.

A module is a file: ``heritage/data/ingest.py`` is ``data.ingest``, a package's ``__init__.py`` is the
package (``report``). Its stage is its first name (``data``); top-level modules are stages of their own.
Imports are read with ``ast`` from the source, function-local ones included (a lazy import is still a
dependency): ``import heritage.x.y``, ``from heritage import x``, ``from heritage.x import y``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "heritage"

# Pipeline stages, lowest first. A module may import modules of its own stage or of lower ones, never
# of a higher one.
STAGES: list[set[str]] = [
    {"errors", "process"},
    {"fileio", "locks"},
    {"data"},
    {"modeling"},
    {"config"},
    {"training"},
    {"inference"},
    {"report"},
    {"pipeline"},
    {"cli", "__main__"},
]
# The generic SLURM scheduler imports nothing of the pipeline, only these foundation modules and itself.
SLURM_MODULES = {"pipeline.slurm", "pipeline.slurm_site"}
SLURM_MAY_IMPORT = {"errors", "fileio"} | SLURM_MODULES
# Stage packages whose __init__ imports nothing, so that importing one module (data.taxonomy,
# modeling.registry) costs only that module. report/ re-exports its public names instead.
EMPTY_INITS = {"data", "modeling", "training", "inference", "pipeline"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(path) for path in PACKAGE.glob("**/*.py") if path != PACKAGE / "__init__.py")


def resolve(dotted: str) -> str:
    """The module ``dotted`` (relative to heritage) names: itself, else its longest existing prefix."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def heritage_imports(path: Path, package: str = "") -> set[str]:
    """The heritage modules ``path`` imports, anywhere in the file (``package``: for relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name[len("heritage."):] for alias in node.names if alias.name.startswith("heritage.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = ".".join(filter(None, [package, node.module]))
            elif node.module == "heritage":
                base = ""
            elif node.module and node.module.startswith("heritage."):
                base = node.module[len("heritage."):]
            else:
                continue
            # from heritage.a import b: the submodule a.b when there is one, else names of a
            found |= {".".join(filter(None, [base, alias.name])) if not base or
                      resolve(f"{base}.{alias.name}") == f"{base}.{alias.name}" else base for alias in node.names}
    return {resolve(name) or name for name in found} - {""}


def source_of(module: str) -> Path:
    folder = PACKAGE / module.replace(".", "/")
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


GRAPH = {module: heritage_imports(source_of(module), module.rpartition(".")[0]) - {module} for module in MODULES}


def stage_of(module: str) -> int:
    return next(index for index, stage in enumerate(STAGES) if module.split(".")[0] in stage)


def test_the_import_reader_sees_function_local_and_relative_imports(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text("import os\nimport heritage.fileio\nfrom heritage import errors, report as r\n"
                      "def f():\n    from heritage.modeling.models import build_model\n"
                      "    from heritage.data import splits\n    from . import tables\n    from .frames import x\n")
    assert heritage_imports(source, "report") == {"fileio", "errors", "report", "modeling.models", "data.splits",
                                                  "report.tables", "report.frames"}


def test_every_module_has_one_stage():
    placed = [name for stage in STAGES for name in stage]
    assert len(placed) == len(set(placed)), "a stage is listed twice"
    missing = sorted({module.split(".")[0] for module in MODULES} - set(placed))
    assert not missing, f"modules without a stage (add them to STAGES and ARCHITECTURE.md): {missing}"


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_higher_stage(module):
    unknown = sorted(dep for dep in GRAPH[module] if dep not in MODULES)
    assert not unknown, f"{module} imports modules that do not exist: {unknown}"
    higher = sorted(dep for dep in GRAPH[module] if stage_of(dep) > stage_of(module))
    assert not higher, f"{module} (stage {stage_of(module) + 1}) imports higher stages: " + ", ".join(
        f"{dep} (stage {stage_of(dep) + 1})" for dep in higher)


def test_no_import_cycles():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(SLURM_MODULES))
def test_the_slurm_scheduler_imports_nothing_of_the_pipeline(module):
    assert module in MODULES, f"{module} does not exist"
    assert GRAPH[module] <= SLURM_MAY_IMPORT, f"{module} imports {sorted(GRAPH[module] - SLURM_MAY_IMPORT)}"


@pytest.mark.parametrize("package", sorted(EMPTY_INITS))
def test_stage_packages_import_nothing_on_their_own(package):
    assert package in MODULES, f"{package}/ is not a package"
    assert not GRAPH[package], f"{package}/__init__.py imports {sorted(GRAPH[package])}"
    assert (source_of(package).read_text(encoding="utf-8").lstrip().startswith('"""')), \
        f"{package}/__init__.py opens without a paragraph on its concern"
