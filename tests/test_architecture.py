"""Arrows between the rooms of dstlab point one way, checked on the import statements.

``topology/`` (the engine) imports no other room; it may use the package's shared top-level
utilities, ``dstlab.errors``, ``dstlab.jit`` and ``dstlab.registry``, which import nothing of
dstlab but each other. ``analysis/`` reads what studies wrote, so it imports nothing from the rooms that build
and train models."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dstlab"
SHARED = {"dstlab", "dstlab.errors", "dstlab.jit", "dstlab.registry"}


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
