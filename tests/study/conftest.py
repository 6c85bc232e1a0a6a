from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# fake_runs must be importable by spawned worker processes and driver subprocesses by name
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Each phase's report on its test item (``item.rep_call``), for fixtures that add
    diagnostics when a test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
