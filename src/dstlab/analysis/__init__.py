"""analysis: a study's results as tables, ranks with significance, mask similarity and an HTML
report. Names are imported lazily so that `dstlab --help` does not load matplotlib."""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dstlab.analysis import report

        return getattr(report, name)
    raise AttributeError(f"module 'dstlab.analysis' has no attribute {name!r}")
