"""Arrows between the rooms of dstlab point one way, checked on the import statements.

``topology/`` (the engine) imports no other room; it may use the package's shared top-level
utilities, ``dstlab.errors``, ``dstlab.jit`` and ``dstlab.registry``, which import nothing of
dstlab but each other. ``analysis/`` reads what studies wrote, so it imports nothing from the rooms that build
and train models. Inside a room, the modules' imports form no cycle."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dstlab"
SHARED = {"dstlab", "dstlab.errors", "dstlab.jit", "dstlab.registry"}
ROOMS = sorted(init.parent.name for init in SRC.glob("*/__init__.py"))


def _imports(room: str) -> dict[str, set[str]]:
    """{module file: dstlab modules it imports (at any depth, lazy imports included)}."""
    found = {}
    for path in sorted((SRC / room).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"
                names.add(node.module or "")
        found[str(path.relative_to(SRC))] = {n for n in names if n.split(".")[0] == "dstlab"}
    return found


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_the_scan_sees_imports():
    engine = _imports("topology")["topology/engine.py"]
    assert "dstlab.topology.criteria" in engine and "dstlab.errors" in engine


def test_topology_imports_no_other_room():
    for path, names in _imports("topology").items():
        outside = {n for n in names if _room(n) != "dstlab.topology" and n not in SHARED}
        assert not outside, f"{path} imports {sorted(outside)}"


def test_shared_top_level_modules_import_only_each_other():
    for name in ("errors", "jit", "registry"):
        tree = ast.parse((SRC / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dstlab"):
                assert node.module in SHARED, f"{name}.py imports {node.module}"


def test_analysis_imports_nothing_from_topology_models_or_data():
    banned = {"dstlab.topology", "dstlab.models", "dstlab.data"}
    for path, names in _imports("analysis").items():
        reached = {n for n in names if _room(n) in banned} | (
            {"dstlab.DST"} if any(n == "dstlab" for n in names) and _imports_dst(path) else set()
        )
        assert not reached, f"{path} imports {sorted(reached)}"


def _imports_dst(path: str) -> bool:
    """`from dstlab import DST` reaches topology through the package root."""
    tree = ast.parse((SRC / path).read_text())
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "dstlab"
        and any(a.name in {"DST", "get_pruner", "list_pruners"} for a in node.names)
        for node in ast.walk(tree)
    )


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room_graph(room: str) -> dict[str, set[str]]:
    """{module of `room`: the modules of `room` it imports (lazy imports included)};
    ``from package import module`` points at the module, not at the package's __init__."""
    paths = {_module_name(path): path for path in (SRC / room).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    inner = f"{node.module}.{alias.name}"
                    found.add(inner if inner in paths else node.module or "")
        graph[name] = (found & paths.keys()) - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (its first node repeated at its end), found depth first, or None."""
    finished: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in finished:
            return None
        path.append(node)
        for successor in sorted(graph[node]):
            if found := visit(successor):
                return found
        path.pop()
        finished.add(node)
        return None

    for node in sorted(graph):
        if found := visit(node):
            return found
    return None


def test_the_cycle_search_names_a_cycle_and_passes_a_chain():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_room_graph_sees_lazy_imports_and_package_forms():
    graph = _room_graph("run")
    assert "dstlab.run.loop" in graph["dstlab.run"]  # `train`, imported on first use
    assert "dstlab.run.files" in graph["dstlab.run.loop"]  # `from dstlab.run import files`


@pytest.mark.parametrize("room", ROOMS)
def test_no_import_cycle_inside_a_room(room):
    cycle = _cycle(_room_graph(room))
    assert cycle is None, f"import cycle in {room}/: {' -> '.join(cycle or [])}"
