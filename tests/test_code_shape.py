"""The code shape rules of heritage/ARCHITECTURE.md ("Code shape"), checked on every module's source.

A function takes at most seven parameters (``self``/``cls`` not counted; group the rest in a dataclass),
returns no unnamed tuple of more than two values (a NamedTuple or a dataclass names them), no module
changes global state when it is imported (set it in the function that needs it), and no comment or
docstring cites an issue number (git says when and why a line changed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "heritage"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_PARAMETERS = 7
MAX_UNNAMED_TUPLE = 2
# Module-level calls that change a process-wide setting: os.environ.setdefault, torch.set_num_threads,
# warnings.filterwarnings, os.umask, ...
GLOBAL_SETTERS = re.compile(r"^(set\w*|setdefault|update|filterwarnings|simplefilter|umask|register\w*)$")
ISSUE_CITATION = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)


def relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def functions(tree: ast.AST):
    return (node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def parameter_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = function.args
    names = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    names += [f"*{a.arg}" for a in (arguments.vararg, arguments.kwarg) if a is not None]
    return [name for name in names if name not in ("self", "cls")]


def own_returns(function: ast.FunctionDef | ast.AsyncFunctionDef):
    """The return statements of ``function`` itself, not of the functions and classes nested in it."""
    pending = list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Return):
            yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(node))


def module_level_statements(tree: ast.Module):
    """Statements run at import: the module's body, into if/try/with blocks but not into definitions."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            pending.extend(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node


def imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def global_state_changes(tree: ast.Module) -> list[str]:
    """Import-time assignments into another module (``PIL.Image.MAX_IMAGE_PIXELS = ...``,
    ``os.environ[...] = ...``) and import-time calls of a setter on one (``os.environ.setdefault(...)``)."""
    modules = imported_names(tree)
    found = []
    for statement in module_level_statements(tree):
        targets = []
        if isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)) and root_name(target) in modules:
                found.append(f"line {statement.lineno}: assigns {ast.unparse(target)}")
        for node in ast.walk(statement):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and GLOBAL_SETTERS.match(node.func.attr) and root_name(node.func) in modules):
                found.append(f"line {node.lineno}: calls {ast.unparse(node.func)}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_no_function_takes_more_than_seven_parameters(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    too_many = sorted(f.name for f in functions(tree) if len(parameter_names(f)) > MAX_PARAMETERS)
    assert not too_many, f"{relative(path)}: more than {MAX_PARAMETERS} parameters: {too_many}"


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_no_function_returns_an_unnamed_tuple_of_more_than_two(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    unnamed = sorted({f.name for f in functions(tree) for r in own_returns(f)
                      if isinstance(r.value, ast.Tuple) and len(r.value.elts) > MAX_UNNAMED_TUPLE})
    assert not unnamed, f"{relative(path)}: returns a tuple of more than {MAX_UNNAMED_TUPLE}: {unnamed}"


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_no_module_changes_global_state_at_import(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    assert not global_state_changes(tree), f"{relative(path)}: {global_state_changes(tree)}"


def enclosing_function(tree: ast.Module, line: int) -> str:
    around = [f for f in functions(tree) if f.lineno <= line <= (f.end_lineno or f.lineno)]
    return max(around, key=lambda f: f.lineno).name if around else "<module>"


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_no_comment_cites_an_issue_number(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    cited = sorted({enclosing_function(tree, number) for number, line in enumerate(source.splitlines(), 1)
                    if ISSUE_CITATION.search(line)})
    assert not cited, f"{relative(path)}: cites an issue number: {cited}"


def test_the_checks_catch_what_they_guard_against() -> None:
    source = ast.parse(
        "import os\nimport PIL.Image\nPIL.Image.MAX_IMAGE_PIXELS = None\nos.environ.setdefault('A', '1')\n"
        "def f(a, b, c, d, e, f, g, h):\n    return a, b, c\n")
    (function,) = functions(source)
    assert len(parameter_names(function)) == 8
    assert [len(r.value.elts) for r in own_returns(function)] == [3]
    assert len(global_state_changes(source)) == 2
    assert ISSUE_CITATION.search("as issue 11 set them") and ISSUE_CITATION.search("(issues #3)")
    assert not ISSUE_CITATION.search("an issue with 3 scans")
