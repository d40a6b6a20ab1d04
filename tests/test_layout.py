"""The package's layout rules (STYLE.md): no import cycles, and policy kept apart from
mechanism. Read from the source with ``ast``: imports inside functions and under
``TYPE_CHECKING`` are not dependencies at import time, and are left out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastapi_tiered_cache"
# Pure decisions: they never reach a store, the codec or Redis (STYLE.md §2).
POLICY = ("policy", "cache_control", "keys", "identity", "credentials", "routes", "routing")
MECHANISM = ("stores", "codec", "redis")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(part for part in parts if part != "__init__")


def _top_level_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    found: list[ast.ImportFrom | ast.Import] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            found.extend(n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    return found


def dependencies(path: Path) -> set[str]:
    """The package modules ``path`` imports at import time (and ``redis`` if it does)."""
    name = module_name(path)
    # The package a relative import starts from: the module's own for an __init__.
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps: set[str] = set()
    for node in _top_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            deps.update("redis" for alias in node.names if alias.name.split(".")[0] == "redis")
            continue
        if node.level == 0:
            if (node.module or "").split(".")[0] == "redis":
                deps.add("redis")
            continue
        base = package.split(".") if package else []
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join([*base, node.module] if node.module else base)
        submodules = {".".join([*base, alias.name]) for alias in node.names}
        if node.module is None and (target not in GRAPH_NAMES or submodules <= GRAPH_NAMES):
            deps.update(submodules)  # from . import x, y: the modules x and y
        else:
            deps.add(target)
    return deps


GRAPH_NAMES = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH = {module_name(path): dependencies(path) for path in PACKAGE.rglob("*.py")}


def test_there_is_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if dep not in GRAPH:
                continue
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [node, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(dep) is None:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(GRAPH):
        if state.get(module) is None:
            visit(module, [module])


@pytest.mark.parametrize("module", POLICY)
def test_policy_never_reaches_a_store_the_codec_or_redis(module: str) -> None:
    def reach(node: str, seen: set[str]) -> set[str]:
        for dep in GRAPH.get(node, ()):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    reached = reach(module, set())
    assert not {dep for dep in reached if dep.split(".")[0] in MECHANISM}, sorted(reached)
