"""The package's import structure: no module of raycl imports itself back through others (at the top
or inside a function), and the search's vocabulary is a leaf that loads neither torch nor Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import raycl

PACKAGE = Path(raycl.__file__).parent


def module_files() -> dict[str, Path]:
    """Every module of the raycl package by its dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """raycl-internal imports of every module, wherever they stand in it: ``import raycl.x.y`` and
    ``from raycl.x import y`` name raycl.x.y when it is a module, else raycl.x."""
    files = module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node, name, is_package)
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in files else source
                           for alias in node.names]
            for target in targets:
                # "import raycl.a.b" runs raycl.a.b; the nearest module named is the dependency.
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target.startswith("raycl") and target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through every strongly connected set of two or more modules."""
    return [_cycle_through(graph, set(c)) for c in strongly_connected(graph)]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan): modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One concrete cycle inside a strongly connected ``component``, as a path back to its start."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way round
        nxt = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    nxt.append(target)
        frontier = nxt
    return sorted(component)


def test_finder_sees_a_cycle():
    graph = {"raycl.a": {"raycl.b"}, "raycl.b": {"raycl.c"}, "raycl.c": {"raycl.a"}, "raycl.d": {"raycl.a"}}
    assert find_cycles(graph) == [["raycl.a", "raycl.b", "raycl.c", "raycl.a"]]


def test_no_import_cycle():
    graph = import_graph()
    # The walk sees top-level and function-level imports, and submodules named by "from raycl.x import y".
    assert {"raycl.tune.space", "raycl.tune.placement"} <= graph["raycl.tune.search"]
    assert "raycl.tune.rung_signal" in graph["raycl.tune.report.experiment"]
    components = strongly_connected(graph)
    assert not components, "import cycles in raycl:\n" + "\n".join(
        f"{' -> '.join(_cycle_through(graph, set(c)))} (modules importing each other: {', '.join(c)})"
        for c in components)


def test_vocabulary_loads_neither_torch_nor_ray():
    code = "import sys, raycl.vocabulary; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
