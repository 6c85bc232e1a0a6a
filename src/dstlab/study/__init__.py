"""Studies: grid specs, the result store, and executors that run a grid without losing work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dstlab.study.results import export_results, read_results
    from dstlab.study.runner import run_study
    from dstlab.study.spec import load_spec, run_id

__all__ = ["export_results", "load_spec", "read_results", "run_id", "run_study"]

_HOMES = {
    "export_results": "dstlab.study.results",
    "read_results": "dstlab.study.results",
    "run_study": "dstlab.study.runner",
    "load_spec": "dstlab.study.spec",
    "run_id": "dstlab.study.spec",
}


def __getattr__(name: str) -> Any:
    # lazy, so `import dstlab.study` stays cheap (pandas loads only when results are read)
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'dstlab.study' has no attribute {name!r}")
