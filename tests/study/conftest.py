from __future__ import annotations

import sys
from pathlib import Path

# fake_runs must be importable by spawned worker processes and driver subprocesses by name
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
