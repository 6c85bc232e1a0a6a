"""Studies: grid specs, the result store, and executors that run a grid without losing work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dstlab.study.results import export_results, read_results
    from dstlab.study.runner import run_study
    from dstlab.study.spec import load_spec, run_id

__all__ = ["export_results", "load_spec", "read_results", "run_id", "run_study"]


def __getattr__(name: str) -> Any:
    # lazy, so `import dstlab.study` stays cheap (pandas loads only when results are read)
    if name in ("export_results", "read_results"):
        from dstlab.study import results as home
    elif name == "run_study":
        from dstlab.study import runner as home
    elif name in ("load_spec", "run_id"):
        from dstlab.study import spec as home
    else:
        raise AttributeError(f"module 'dstlab.study' has no attribute {name!r}")
    return getattr(home, name)
