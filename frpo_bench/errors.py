"""User-facing errors: one clear message naming field, value and fix; exit code 2."""
from __future__ import annotations

import reprlib
import signal

# a value named in an error is shown bounded: a recipe's value may be huge or deep (a YAML alias bomb)
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxtuple, _SHOWN.maxset = 3, 8, 8, 8, 8
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 200, 200, 60


def shown(value: object) -> str:
    """A value's repr, cut to a few hundred characters whatever its size or depth."""
    try:
        return _SHOWN.repr(value)
    except RecursionError:
        return f"<a {type(value).__name__} nested too deep to show>"


class ConfigError(Exception):
    """Bad input detected before any compute. The CLI prints it and exits with 2."""

    exit_code = 2

    def __init__(self, field: str, value: object, problem: str, fix: str):
        self.field, self.value, self.problem, self.fix = field, value, problem, fix
        super().__init__(f"{field}: {problem} (got {shown(value)}). Fix: {fix}")


def error_summary(err: BaseException) -> str:
    """An exception as its class and the first line of its message (where the cause is usually named)."""
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return f"{err.__class__.__name__}: {first}" if first else err.__class__.__name__


class StageError(RuntimeError):
    """A stage failed mid-run; finished stages stay cached, the failed one leaves no artifact."""


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every `finally` and build cleanup runs on the way out."""


# The stop signals that arrived (SIGINT, SIGTERM). A handler raises at whatever bytecode runs, and when that is
# a finalizer or a library's catch-all the exception is swallowed and the run would carry on; the runner raises
# again at its next stage boundary from this record.
RECEIVED_STOPS: list[int] = []


def raise_if_stopped() -> None:
    """Raise the stop a signal asked for, should its first raise have been lost."""
    if RECEIVED_STOPS:
        raise KeyboardInterrupt() if RECEIVED_STOPS[0] == signal.SIGINT else Terminated()
