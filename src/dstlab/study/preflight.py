"""Before a study runs anything (and on ``--dry-run``), every run of its spec is built ahead on
the meta device (``dstlab.run.preflight``): a grid point that cannot start is one sentence naming
its options, and no run starts."""

from __future__ import annotations

from dstlab.errors import ConfigError, MissingDependency
from dstlab.run.config import RunConfig
from dstlab.run.preflight import BuildCheck
from dstlab.study.spec import StudySpec


def check_spec(spec: StudySpec, *, missing_ok: bool = False) -> list[str]:
    """Raise ConfigError naming the first run of ``spec`` that cannot start (and how many more
    fail the same way). A run needing a package that is not installed here is an error too,
    unless ``missing_ok`` (the runs execute elsewhere, or nothing runs): then it is one of the
    returned notes, one per reason."""
    check = BuildCheck()
    failures: dict[str, list[RunConfig]] = {}
    unchecked: dict[str, list[RunConfig]] = {}
    for config in spec.runs:
        try:
            check.check(config)
        except MissingDependency as error:
            unchecked.setdefault(str(error), []).append(config)
        except ConfigError as error:
            failures.setdefault(str(error), []).append(config)
    if failures:
        reason, configs = next(iter(failures.items()))
        raise ConfigError(_cannot_start(spec, reason, configs, sum(map(len, failures.values()))))
    if unchecked and not missing_ok:
        reason, configs = next(iter(unchecked.items()))
        raise ConfigError(_cannot_start(spec, reason, configs, sum(map(len, unchecked.values()))))
    return [
        f"{len(configs)} run(s) not checked here: {_lower_first(reason)}"
        for reason, configs in unchecked.items()
    ]


def _cannot_start(spec: StudySpec, reason: str, configs: list[RunConfig], total: int) -> str:
    first = configs[0]
    label = ", ".join(f"{k}={_show(getattr(first, k))}" for k in spec.grid_keys)
    which = f"the run with {label}" if label else "its run"
    more = f" (nor can {total - 1} other run(s))" if total > 1 else ""
    return f"{spec.name}: {which} cannot start{more}: {_lower_first(reason)}"


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
