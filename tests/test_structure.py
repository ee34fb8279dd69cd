"""The package's shape: no import circle between its packages (config, data, split, extract, train, report, ...),
counting imports inside functions too, so the pipeline's layers stay one-way."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "hpcfed"


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST):
    """Every imported module name with its line, skipping `if TYPE_CHECKING:` blocks (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            yield from ((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))


def package_graph(root: Path) -> dict[str, dict[str, str]]:
    """{package: {imported package: "file:line" of the first such import}} between the direct children of
    `root` (a sub-package, or a top-level module standing for itself)."""
    name = root.name
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(root.rglob("*.py")):
        source = path.relative_to(root).parts[0].removesuffix(".py")
        for module, line in _imports(ast.parse(path.read_text())):
            parts = module.split(".")
            if parts[0] != name or len(parts) < 2 or parts[1] == source:
                continue
            if (root / parts[1]).is_dir() or (root / f"{parts[1]}.py").is_file():
                graph[source].setdefault(parts[1], f"{path.relative_to(root.parent)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle_between_packages():
    graph = package_graph(PACKAGE)
    assert {"config", "data", "split", "extract", "train", "report", "runtime", "methods"} <= set(graph)
    cycle = find_cycle(graph)
    where = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)] if cycle else []
    assert cycle is None, "import circle between packages:\n  " + "\n  ".join(where)


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    for sub in ("a", "b", "c"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from pkg.b import y\n")
    (pkg / "b" / "y.py").write_text("import pkg.c.z\n")
    (pkg / "c" / "z.py").write_text("def f():\n    from pkg.a.x import g\n")
    (pkg / "c" / "w.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import y\n")
    graph = package_graph(pkg)
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert graph["c"]["a"] == "pkg/c/z.py:2" and "b" not in graph["c"]  # type-only imports do not count


def test_the_distributed_runtime_knows_no_method_dataset_or_config():
    assert not set(package_graph(PACKAGE)["runtime"]) & {"methods", "data", "config", "split", "train", "models"}
