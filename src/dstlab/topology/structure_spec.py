"""The names of the sparsity structures (``DST(..., structure=...)``) and their parsing.

No torch here: a run's configuration checks a structure's name and its density before anything
is built. The structures themselves live in ``topology/structures.py`` (DESIGN §11)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dstlab.errors import ConfigError

#: the forms a structure takes, for help texts and error messages
FORMS = ("unstructured", "n:m", "fan_in", "block:RxC", "channel")
#: the kinds ``backend="sparse"`` (CSR rows) holds: rows of equal length are plain CSR
SPARSE_BACKEND_KINDS = ("unstructured", "fan_in")

_N_OF_M = re.compile(r"^(\d+):(\d+)$")
_BLOCK = re.compile(r"^block:(\d+)x(\d+)$")
_HOW = "unstructured, n:m (such as 2:4), fan_in, block:RxC (such as block:4x4) or channel"


@dataclass(frozen=True)
class StructureSpec:
    """A parsed structure: its ``kind`` (``unstructured``, ``n:m``, ``fan_in``, ``block`` or
    ``channel``), the text it was given as, and its numbers (n and m; block rows and columns)."""

    kind: str
    text: str
    n: int = 0
    m: int = 0
    rows: int = 0
    cols: int = 0

    @property
    def fixed_density(self) -> float | None:
        """The density every sparse layer has under this structure, when it fixes one (n/m)."""
        return self.n / self.m if self.kind == "n:m" else None

    def check_backend(self, backend: str) -> None:
        """One sentence when ``backend`` cannot hold this structure."""
        if backend == "sparse" and self.kind not in SPARSE_BACKEND_KINDS:
            raise ConfigError(
                f"the sparse backend cannot hold structure '{self.text}' (it supports "
                "unstructured and fan_in); use backend='masked'."
            )

    def check_density(self, density: float) -> None:
        """One sentence when the requested density is one this structure cannot have."""
        fixed = self.fixed_density
        if fixed is not None and abs(density - fixed) > 1e-9:
            raise ConfigError(
                f"structure '{self.text}' keeps {self.n} of every {self.m} weights, so every "
                f"sparse layer has density {fixed:g}, but density is {density:g}; set "
                f"density={fixed:g} or choose another n:m."
            )


def parse_structure(text: object) -> StructureSpec:
    """``"unstructured"``, ``"2:4"``, ``"fan_in"``, ``"block:4x4"`` or ``"channel"`` as a spec;
    anything else is one sentence naming the forms."""
    if not isinstance(text, str):
        raise ConfigError(f"structure must be {_HOW}; got {text!r}.")
    word = text.strip()
    if word in ("unstructured", "fan_in", "channel"):
        return StructureSpec(word, word)
    found = _N_OF_M.match(word)
    if found:
        n, m = int(found[1]), int(found[2])
        if not 0 < n < m:
            raise ConfigError(
                f"structure '{word}' must keep n of every m weights with 0 < n < m, such as 2:4."
            )
        return StructureSpec("n:m", word, n=n, m=m)
    found = _BLOCK.match(word)
    if found:
        rows, cols = int(found[1]), int(found[2])
        if rows < 1 or cols < 1:
            raise ConfigError(f"structure '{word}' needs blocks of at least 1x1 weights.")
        return StructureSpec("block", word, rows=rows, cols=cols)
    raise ConfigError(f"structure must be {_HOW}; got {text!r}.")
