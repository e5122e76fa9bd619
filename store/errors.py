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


class StoreVersionError(StoreError):
    """A store of another schema version: its message says how to rebuild it, and nothing more is to be said."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type where it has none (a detail inside another message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """What the user sees of an error: a MicroscopeError's own message; any other error with its type."""
    if isinstance(exc, MicroscopeError) or not str(exc).strip():
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"
