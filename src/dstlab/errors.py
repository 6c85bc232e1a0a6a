"""User-facing errors: each message is one sentence saying what was wrong and what to do.

The CLI prints ``str(error)`` of any :class:`DstlabError` without a traceback."""


class DstlabError(Exception):
    """Base of every error whose message is meant for the user."""


class ConfigError(DstlabError, ValueError):
    """A bad option value, an unknown name, or a broken spec/config file."""


class DataError(DstlabError, FileNotFoundError):
    """A dataset is missing or malformed on disk."""


class MissingDependency(ConfigError):
    """An option needs an optional package that is not installed here (e.g. torchvision)."""
