"""Where a run's messages go: a few lines for the user's console, and everything in the work
directory's log.

Library code logs with :mod:`logging` as usual (``logging.getLogger("regfac_jax")``, orbax through
``absl.logging``); nothing here configures the console. The launchers (``experiments/cli.py``) show
on the console only progress bars, warnings and the records of :data:`CONSOLE_LOGGER`;
:func:`log_to_file` copies every record (INFO and up, from every library) into a file such as
``WORKDIR/log.txt``.

* :func:`console`: an INFO line meant for the user (e.g. :func:`report_resume`); it also reaches the
  log file.
* :func:`log_to_file`: a context manager that appends every record to a file while a run works in
  its directory, and records there the exception (with traceback) that ends a run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from typing import Iterator

__all__ = [
    "CONSOLE_LOGGER",
    "FILE_ONLY",
    "attach_log_file",
    "console",
    "detach_log_file",
    "log_to_file",
    "report_resume",
]

#: Records of this logger (and its children) are meant for the user's console.
CONSOLE_LOGGER = "regfac_jax.console"
#: A record carrying this attribute (``extra={FILE_ONLY: True}``) goes to log files only, never to
#: the console.
FILE_ONLY = "regfac_file_only"
LIBRARY_LOGGER = "regfac_jax"
FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


def console(msg: str, *args) -> None:
    """Logs an INFO line for the user's console (launchers print it as is); it also reaches the log
    file."""
    logging.getLogger(CONSOLE_LOGGER).info(msg, *args)


def report_resume(done: int, total: int) -> None:
    """Announces a resumed run: ``resuming: N of M samples done``."""
    console("resuming: %d of %d samples done", int(done), int(total))


def attach_log_file(path: str | os.PathLike, level: int = logging.INFO) -> logging.Handler:
    """Appends every record of ``level`` and up (from the root logger down) to ``path``; see
    :func:`log_to_file`.

    Also lowers the ``regfac_jax`` logger to ``level`` if it is higher, so the library's own records
    get through. Returns the handler, for :func:`detach_log_file`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # append: a resumed run continues its log
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    library = logging.getLogger(LIBRARY_LOGGER)
    handler.regfac_previous_level = library.level  # restored by detach_log_file
    if library.getEffectiveLevel() > level:
        library.setLevel(level)
    logging.getLogger().addHandler(handler)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    """Undoes :func:`attach_log_file`: removes and closes the handler, restores the library logger's
    level."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    logging.getLogger(LIBRARY_LOGGER).setLevel(
        getattr(handler, "regfac_previous_level", logging.NOTSET)
    )


@contextlib.contextmanager
def log_to_file(path: str | os.PathLike, level: int = logging.INFO) -> Iterator[logging.Handler]:
    """Within the block, every record of ``level`` and up goes to ``path`` (appended); an exception
    that leaves the block is recorded there with its traceback (and not on the console: the launcher
    reports it)."""
    handler = attach_log_file(path, level)
    try:
        yield handler
    except BaseException as err:
        logging.getLogger(LIBRARY_LOGGER).error(
            "stopped by %s: %s", type(err).__name__, err, exc_info=True, extra={FILE_ONLY: True}
        )
        raise
    finally:
        detach_log_file(handler)
