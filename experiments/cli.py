"""The one way every launcher runs: ``cli.run(main)`` instead of ``absl.app.run(main)``.

* Bad flags (unknown flag, misspelt config field, a value of the wrong type, a config file that does
  not load): one line on stderr, exit status 2.
* User errors (:class:`regfac_jax.errors.UserError`: unknown region or class, a work directory of
  another experiment, a damaged or unsafe checkpoint, non-finite directions, ...; and ``OSError``: a
  missing checkpoint, an unwritable directory): one line ``error: ...`` on stderr, exit status 1.
  Any other exception is a bug and keeps its traceback. ``--verbosity=1`` (or ``-v 1``) shows the
  traceback of user errors too, and every log record (``--alsologtostderr`` only the latter).
* Ctrl-C: one line, exit status 130 (``find_directions`` resumes when re-run).
* Console: progress bars, warnings and the lines the library addresses to the user
  (:func:`regfac_jax.logs.console`, e.g. ``resuming: 3 of 8 samples done``); INFO records (orbax's
  ~35 lines per checkpoint, JAX's backend probing, per-sample timings) go only to the run's
  ``log.txt`` (:func:`regfac_jax.logs.log_to_file`).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import traceback
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from regfac_jax import errors, logs

EXIT_USER_ERROR = 1
EXIT_BAD_FLAGS = 2
EXIT_INTERRUPTED = 130
#: Exceptions reported as one line: the user's input or environment is at fault, and the message
#: says how.
USER_ERRORS = (errors.UserError, OSError)

FLAGS = flags.FLAGS


def run(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """``absl.app.run(main)`` with the flag, error and console handling described in the module
    docstring."""
    app.run(
        functools.partial(_run_main, main),
        argv=list(argv) if argv is not None else None,
        flags_parser=parse_flags,
    )


def parse_flags(argv: list[str]) -> list[str]:
    """Parses ``argv`` into ``FLAGS``; a bad flag ends the process with one line and exit status
    2."""
    try:
        remaining = FLAGS(argv)
        _load_config_files()
        return remaining
    except flags.Error as err:
        message = _one_line(str(err))
    # ml_collections: config file/fields
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as err:
        field_error = isinstance(err, KeyError) or bool(
            err.args and isinstance(err.args[0], KeyError)
        )
        message = _unknown_field_message(err, argv) if field_error else _one_line(f"{err}")
    if _verbose(argv):
        traceback.print_exc()
    message = re.sub(
        r"^flag (--\S+)=None: Flag --\S+ must have a value other than None\.$",
        r"\1 is required",
        message,
    )
    message = message[len("flag ") :] if message.startswith("flag --") else message
    _exit(f"bad flag: {message} (--helpfull lists every flag)", EXIT_BAD_FLAGS)


def _load_config_files() -> None:
    """ml_collections defers a config file's load error to the first use; make it a flag error
    now."""
    for name in list(FLAGS):
        value = FLAGS[name].value
        # config_flags' placeholder for a file that failed to load
        if type(value).__name__ == "_ErrorConfig":
            spec = FLAGS[name].config_filename
            try:
                value.lock()
            except OSError as err:
                path = spec.split(":", 1)[0]
                detail = (
                    f"no such file {path!r}" if not os.path.isfile(path) else _one_line(str(err))
                )
                raise flags.IllegalFlagValueError(f"--{name}={spec}: {detail}") from err


def _unknown_field_message(err: BaseException, argv: Sequence[str]) -> str:
    """``'num_sample'\\nDid you mean "num_samples" ...`` buried in nested KeyErrors -> one readable
    line."""
    text = err
    while isinstance(text, BaseException):
        text = text.args[0] if text.args else str(text)
    text = str(text)
    field = text.splitlines()[0].strip("'\"") if text else "?"
    given = next(
        (
            a.split("=", 1)[0]
            for a in argv
            if a.startswith("--") and a.split("=", 1)[0].endswith(f".{field}")
        ),
        None,
    )
    where = f"{given}: " if given else ""
    match = re.search(r'Did you mean "([^"]+)"', text)
    hint = f'; did you mean "{match.group(1)}"?' if match else ""
    return f"{where}the config has no field {field!r}{hint}"


def _one_line(text: str) -> str:
    """A message on one line: a traceback keeps its last line (the error), other line breaks become
    '; '."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if any(ln.startswith("Traceback") for ln in lines):
        lines = lines[-1:]
    return "; ".join(lines)


def _verbose(argv: Sequence[str] | None = None) -> bool:
    """True with ``--verbosity``/``-v`` >= 1 (read from the parsed flags, or from ``argv`` if
    parsing failed)."""
    if FLAGS.is_parsed():
        return FLAGS["verbosity"].value >= 1
    for i, arg in enumerate(argv or ()):
        name, _, value = arg.partition("=")
        if name in ("--verbosity", "-v"):
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            return value.lstrip("-").isdigit() and int(value) >= 1
    return False


def _exit(message: str, status: int) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n" if status != EXIT_INTERRUPTED else f"{message}\n")
    sys.stderr.flush()
    sys.exit(status)


def _run_main(main: Callable[[list[str]], object], argv: list[str]):
    verbose = _verbose()
    configure_console(verbose or bool(FLAGS["logtostderr"].value or FLAGS["alsologtostderr"].value))
    try:
        return main(argv)
    except USER_ERRORS as err:
        if verbose:
            traceback.print_exc()
        _exit(str(err) or type(err).__name__, EXIT_USER_ERROR)
    except KeyboardInterrupt:
        _exit("interrupted", EXIT_INTERRUPTED)


class _ConsoleFilter(logging.Filter):
    """absl's stderr handler: warnings and errors only (all records with ``verbose``); never the
    user lines (they have their own handler) nor records meant for log files only."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, logs.FILE_ONLY, False) or record.name.startswith(logs.CONSOLE_LOGGER):
            return False
        return self.verbose or record.levelno >= logging.WARNING


class _UserLineHandler(logging.Handler):
    """Prints :func:`regfac_jax.logs.console` lines as they are, without breaking a running progress
    bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never end a run)
            self.handleError(record)


def configure_console(verbose: bool = False) -> None:
    """Quiets absl's stderr handler (see :class:`_ConsoleFilter`) and prints the library's user
    lines."""
    handler = absl_logging.get_absl_handler()
    for old in [f for f in handler.filters if isinstance(f, _ConsoleFilter)]:
        handler.removeFilter(old)
    handler.addFilter(_ConsoleFilter(verbose))
    user = logging.getLogger(logs.CONSOLE_LOGGER)
    if not any(isinstance(h, _UserLineHandler) for h in user.handlers):
        line = _UserLineHandler()
        line.setFormatter(logging.Formatter("%(message)s"))
        user.addHandler(line)
    user.setLevel(logging.INFO)
