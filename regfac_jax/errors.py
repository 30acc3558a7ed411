"""The library's user-error types: bad input whose message already says what is wrong and how to fix
it.

Launchers (``experiments/cli.py``) print a :class:`UserError` as one line and exit with status 1;
any other exception is a bug and keeps its traceback. Each concrete type also derives from the
built-in type it replaced (``ValueError``, ``RuntimeError``), so ``except ValueError`` in existing
code keeps working.

* :class:`ConfigError`: a setting that cannot be used (unknown class name, layer, latent space,
  ...).
* :class:`InputFileError`: a file whose content cannot be used (non-finite or wrongly shaped arrays,
  ...); the message names the file.
* elsewhere: ``regions.RegionError``, ``io_utils.WorkdirConflict`` (work directories and
  checkpoints) and the converters' ``ConversionError`` / ``CheckpointFormatError`` /
  ``UnsafeCheckpointError``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

__all__ = ["ConfigError", "InputFileError", "UserError", "check_field_names"]


class UserError(Exception):
    """Bad input from the user (a setting, a file, a work directory); the message names the problem
    and the fix."""


class ConfigError(UserError, ValueError):
    """A setting that cannot be used."""


class InputFileError(UserError, ValueError):
    """A file whose content cannot be used; the message names the file."""


def check_field_names(cls, names: Iterable[str], what: str) -> None:
    """Refuses setting names that are not fields of the dataclass ``cls`` (a settings object built
    from a launcher config's section).

    Raises:
      ConfigError: naming the unknown settings and listing the fields ``cls`` takes.
    """
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown {what} setting(s) {unknown}; {cls.__name__} takes {fields}.")
