"""The package's layering: no import cycle between subpackages or between modules.

Every `import` is read from the source, including those inside functions and under
TYPE_CHECKING: a function-level import that closes a cycle is still a cycle a reader must
untangle, it only fails later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthsieve"


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The synthsieve modules `path` imports, by name (a package's __init__ is its name)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in known else module)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports_of(path, name, set(names)) for name, path in names.items()}


def unit(module: str) -> str:
    """The layer a module belongs to: its subpackage, or itself for a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(planted) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from synthsieve.cli import main\n"
                      "from . import sibling\n")
    known = {"synthsieve.cli", "synthsieve.io.sibling", "synthsieve.io"}
    assert imports_of(module, "synthsieve.io.m", known) == {"synthsieve.cli",
                                                             "synthsieve.io.sibling"}


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_no_import_cycle_between_subpackages():
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        edges.setdefault(unit(module), set()).update(
            unit(t) for t in targets if unit(t) != unit(module))
    assert cycles(edges) == []


@pytest.mark.parametrize("layer,forbidden", [
    ("synthsieve.io", {"synthsieve.transforms", "synthsieve.pipelines", "synthsieve.cli",
                       "synthsieve.inference"}),
    ("synthsieve.transforms", {"synthsieve.pipelines", "synthsieve.cli"}),
    ("synthsieve.inference", {"synthsieve.transforms", "synthsieve.pipelines",
                              "synthsieve.cli"}),
    ("synthsieve.runners", {"synthsieve.pipelines", "synthsieve.cli"}),
    ("synthsieve.pipelines", {"synthsieve.cli"}),
])
def test_lower_layers_do_not_import_higher_ones(layer, forbidden):
    wrong = {(m, t) for m, targets in graph().items() if unit(m) == layer
             for t in targets if unit(t) in forbidden}
    assert wrong == set()


def _tests_by_module() -> dict[str, dict[str, bool]]:
    """test module -> {test function: marked slow}, read from the source."""
    out = {}
    for path in sorted((PACKAGE.parent / "tests").glob("test_*.py")):
        tests = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                tests[node.name] = any("slow" in ast.unparse(d) for d in node.decorator_list)
        out[path.name] = tests
    return out


def test_the_fast_loop_runs_tests_of_every_module_and_most_of_all():
    modules = _tests_by_module()
    without_fast = [m for m, tests in modules.items() if all(tests.values())]
    assert without_fast == []
    everything = [slow for tests in modules.values() for slow in tests.values()]
    assert sum(not slow for slow in everything) >= 0.7 * len(everything)
