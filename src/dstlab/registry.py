"""A registry of things by name (timm-style), shared by models, datasets and criteria.

Specs and configs stay plain strings; the registry turns a name into the object and an unknown
name into one sentence listing the known ones."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from dstlab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, e.g. ``Registry("model")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register("lenet5")`` adds the decorated object under ``name``."""

        def add(entry: T) -> T:
            if name in self._entries:
                # two modules claiming one name is a programming error, not a user error
                raise ValueError(f"{self.kind} {name!r} is registered twice.")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises ConfigError listing the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        raise ConfigError(
            f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
            f"known: {', '.join(self.names())}."
        )

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test or a notebook cleaning up what it registered)."""
        del self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def did_you_mean(value: object, known: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` naming the known name closest to ``value``, or "" if none is."""
    names = [k for k in known if isinstance(k, str)]
    close = difflib.get_close_matches(str(value), names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_one_of(option: str, value: Any, allowed: Iterable[Any]) -> None:
    """ConfigError ``option must be one of a, b; got 'c' (did you mean 'a'?).`` unless ``value``
    is allowed (None is shown as ``none``, the word the CLI and config files accept for it)."""
    allowed = tuple(allowed)
    if value in allowed:
        return
    shown = ", ".join("none" if a is None else str(a) for a in allowed)
    raise ConfigError(
        f"{option} must be one of {shown}; got {value!r}{did_you_mean(value, allowed)}."
    )
