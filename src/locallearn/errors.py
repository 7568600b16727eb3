"""User-facing errors. The CLI prints their message as one line on stderr and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path


class LocalLearnError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(LocalLearnError):
    """A bad recipe, flag, arch, method or split."""


class DataError(LocalLearnError):
    """A missing, corrupt or malformed dataset file."""


class TrainingError(LocalLearnError):
    """Training cannot go on (e.g. a non-finite loss)."""


class OutputError(LocalLearnError):
    """A file of the run cannot be written: a file in the way, no permission, no space left."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_failure(path: Path, error: OSError) -> OutputError:
    """The OutputError that says why writing `path` failed and what to do; whatever was there is kept."""
    if error.errno in NO_SPACE:
        return OutputError(
            f"no space left on the device to write {path}; free some space and run the command again "
            f"(the previous {path.name}, if any, is intact; a training run continues with --resume)"
        )
    if error.errno in NO_PERMISSION:
        return OutputError(f"no permission to write {path}; choose a folder you can write to (--out)")
    reason = error.strerror or str(error)
    return OutputError(f"cannot write {path} ({reason}); choose another folder (--out)")
