"""The import graph of `multinet_jax/models/` has no cycle, lazy (function-level) imports included."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "multinet_jax.models"
MODELS_DIR = pathlib.Path(__file__).resolve().parents[1] / "multinet_jax" / "models"


def module_name(path: pathlib.Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def imported_modules(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports anywhere in its body (an imported name that is not a submodule
    is an edge to the package, `multinet_jax.models` itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = sorted(MODELS_DIR.glob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) - {module_name(path)} for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_models_import_graph_has_no_cycle():
    graph = import_graph()
    assert f"{PACKAGE}.backbone" in graph[f"{PACKAGE}.decoding"]  # the graph is read, not empty
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_of_the_package_imports_the_package_itself():
    """`models/__init__.py` re-exports every family; a submodule importing it would close a cycle through it."""
    graph = import_graph()
    assert [name for name, targets in graph.items() if PACKAGE in targets] == []


@pytest.mark.parametrize("source, cycle", [
    ("import multinet_jax.models.b\n", ["multinet_jax.models.a", "multinet_jax.models.b", "multinet_jax.models.a"]),
    ("def f():\n    from multinet_jax.models import b\n", ["multinet_jax.models.a", "multinet_jax.models.b", "multinet_jax.models.a"]),
    ("x = 1\n", None),
])
def test_the_check_sees_top_level_and_lazy_imports(tmp_path, source, cycle):
    (tmp_path / "a.py").write_text(source)
    (tmp_path / "b.py").write_text("from multinet_jax.models.a import x\n")
    modules = {module_name(tmp_path / "a.py"), module_name(tmp_path / "b.py")}
    graph = {name: imported_modules(tmp_path / f"{name.rsplit('.', 1)[1]}.py", modules) for name in modules}
    assert find_cycle(graph) == cycle
