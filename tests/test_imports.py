"""The package's module-level imports form no cycle (read from the source with ``ast``; nothing is imported).

A cycle makes the result of an import depend on which module of the cycle is imported first, and hides which
module is built on which. Imports inside functions are not counted (they run after every module is loaded), nor
an import of a package that contains the importing module (the package is already being initialised).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "grm_jax"


def package_modules(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` of every module of ``package`` (a package is named by its ``__init__``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _module_level(body):
    """The statements run when the module is imported: the top level and the branches of top-level if/try (but
    ``if TYPE_CHECKING:``), not function or class bodies."""
    for node in body:
        if isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                yield from _module_level(node.orelse)
                continue
            yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        else:
            yield node


def imported_modules(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The package modules that importing ``name`` imports at module level (resolving ``from X import y`` to the
    submodule ``X.y`` where there is one)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in _module_level(ast.parse(path.read_text(encoding="utf-8"), str(path)).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # importing a.b.c runs a, a.b and a.b.c: each one of ours that does not contain the importer
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                if module in modules and module != name and not name.startswith(module + "."):
                    found.add(module)
    return found


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a module importing itself), as the
    list of its modules in import order, the first repeated at the end."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        # a shortest path from start back to start inside the component (breadth first)
        parent, queue = {start: None}, [start]
        for node in queue:
            if start in graph[node]:
                break
            for succ in sorted(graph[node] & component):
                if succ not in parent:
                    parent[succ] = node
                    queue.append(succ)
        path = [node]
        while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
        cycles.append(path[::-1] + [start])
    return cycles


def test_the_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("files, cycle", [
    ({"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n", "pkg/b.py": "import pkg.a\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
    # the cycle this module was written for: a package's __init__ → submodule → a module that imports the package
    ({"pkg/__init__.py": "", "pkg/ds/__init__.py": "from pkg.ds.syn import X\n",
      "pkg/ds/syn.py": "from pkg.source import encode\nX = 1\n",
      "pkg/source.py": "from pkg.ds import make\n"}, ["pkg.ds", "pkg.ds.syn", "pkg.source", "pkg.ds"]),
    ({"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "from .a import f\n"},
     ["pkg.a", "pkg.b", "pkg.a"]),
])
def test_a_cycle_is_found(tmp_path, files, cycle):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert find_cycles(import_graph(tmp_path, "pkg")) == [cycle]


def test_imports_inside_functions_and_of_the_own_package_are_not_cycles(tmp_path):
    files = {"pkg/__init__.py": "from pkg.a import f\n", "pkg/a.py": "import pkg.b\ndef f():\n    import pkg.a\n",
             "pkg/b.py": "from pkg import c\nif TYPE_CHECKING:\n    import pkg.a\n",
             "pkg/c.py": "def g():\n    from pkg.a import f\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == set()
    assert find_cycles(graph) == []
