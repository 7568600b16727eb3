"""User-facing errors. The CLI prints their message as one line on stderr and exits non-zero."""


class LocalLearnError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(LocalLearnError):
    """A bad recipe, flag, arch, method or split."""


class DataError(LocalLearnError):
    """A missing, corrupt or malformed dataset file."""


class TrainingError(LocalLearnError):
    """Training cannot go on (e.g. a non-finite loss)."""
