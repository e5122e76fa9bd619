"""The one error base class. Every failure a user can act on (a bad value, an unknown model, an unreadable
dataset, a store of another schema) is a `MicroscopeError` whose message is one line, printed as is by the
command line (`microscope: error: MESSAGE`) and shown as is by the dashboard. Anything else is a bug, printed
with its type so that it can be reported."""

from __future__ import annotations


class MicroscopeError(Exception):
    """A failure explained in one line for the user; `exit_code` is what the command line exits with."""

    exit_code = 1


class StoreError(MicroscopeError, RuntimeError):
    """A store that cannot be read or written."""


def one_line(exc: BaseException) -> str:
    """What the user sees of an error: a MicroscopeError's own message; any other error with its type."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, MicroscopeError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
