"""Every environment variable Microscope reads, and every default, in one place. Read at call time, never at
import, so that a test or a server can set them before use.

| variable           | what                                                       | default                           |
|--------------------|------------------------------------------------------------|-----------------------------------|
| MICROSCOPE_STORE   | the store: a file, or a published one (https, s3, hf URL)  | data/microscope.duckdb            |
| MICROSCOPE_CACHE   | where copies of remote stores are kept                     | $XDG_CACHE_HOME/microscope/stores |
| MICROSCOPE_REFRESH | seconds between checks of a remote store for a newer file  | 60                                |
| MICROSCOPE_ALLOWED | who may enter a dashboard with a login (overrides secrets) | the secrets' [microscope] allowed |
| MICROSCOPE_DEBUG   | set: the command line raises errors with their traceback   | unset                             |
| MICROSCOPE_OFFLINE | set: never download model weights (HF_HUB_OFFLINE too)     | unset                             |
| MICROSCOPE_NOTES   | the notes database: any SQLAlchemy URL (postgresql+psycopg) | NAME.notes.sqlite by the store |
| MICROSCOPE_NOTES_READONLY | 1: nobody may write notes                          | unset                          |
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = "data/microscope.duckdb"
DEFAULT_REFRESH = 60.0


def store_location() -> str:
    """Where the store is: a path, or the URL of a published store."""
    return os.environ.get("MICROSCOPE_STORE") or DEFAULT_STORE


def cache_dir() -> Path:
    if os.environ.get("MICROSCOPE_CACHE"):
        return Path(os.environ["MICROSCOPE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "microscope" / "stores"


def refresh_seconds() -> float:
    """A value that is not a number falls back to the default rather than stopping a running dashboard."""
    try:
        return max(0.0, float(os.environ.get("MICROSCOPE_REFRESH", DEFAULT_REFRESH)))
    except ValueError:
        return DEFAULT_REFRESH


def allowed() -> list[str] | None:
    """The allowlist from MICROSCOPE_ALLOWED (comma or space separated), or None where it is not set."""
    text = os.environ.get("MICROSCOPE_ALLOWED")
    return None if text is None else text.replace(",", " ").split()


def debug() -> bool:
    return bool(os.environ.get("MICROSCOPE_DEBUG"))


def offline() -> bool:
    """No downloads: an air-gapped machine says so with MICROSCOPE_OFFLINE or, as for the Hub, HF_HUB_OFFLINE."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("MICROSCOPE_OFFLINE", "HF_HUB_OFFLINE"))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def notes_url() -> str | None:
    """The notes database's SQLAlchemy URL, or None for the SQLite file beside the store (store.notes)."""
    return os.environ.get("MICROSCOPE_NOTES") or None


def notes_readonly() -> bool:
    return _flag("MICROSCOPE_NOTES_READONLY")
