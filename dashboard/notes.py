"""The dashboard's window on the notes database (store.notes): one open database per server, who writes, and
what the layer gallery and the search page read. Notes are live (another replica may have just written), so
nothing here is cached but the connection; a database that cannot be reached or is locked gives `None` and one
line for the page, and the store's evidence is shown as ever."""

from __future__ import annotations

import streamlit as st

from dashboard import access, url_widgets
from store import config
from store.errors import first_line
from store.notes import Notes, NotesError, default_url

UNAVAILABLE = "Notes are unavailable"


@st.cache_resource(show_spinner=False, max_entries=4)
def _open(url: str, readonly: bool) -> Notes:
    return Notes.open(url, readonly=readonly)  # raises: a failure is not cached, the next run tries again


def database() -> tuple[Notes | None, str]:
    """(the notes database, "") or (None, the one line a page shows instead)."""
    try:
        return _open(default_url(), config.notes_readonly()), ""
    except NotesError as exc:
        return None, unavailable(exc)


def unavailable(exc: Exception) -> str:
    text = first_line(exc)
    if text.lower().startswith("notes are unavailable"):
        text = text[len("notes are unavailable"):].lstrip(": ")
    return f"{UNAVAILABLE}: {text}" if text else f"{UNAVAILABLE}."


def author() -> tuple[str | None, str]:
    """(who writes, "") or (None, why this visitor may not write). With a login, the verified email of the
    signed-in user (app.py has already checked the allowlist); without one, `local`."""
    if config.notes_readonly():
        return None, "Notes are read-only on this Microscope."
    if not access.login_configured():
        return "local", ""
    email = access.signed_in_email()
    if email and access.allowed(email, access.allowlist()):
        return email, ""
    return None, "Sign in with an allowed, verified account to write notes."


def layer_badges(model_id: str, layer: str) -> tuple[dict[int, dict], dict[str, list[int]], str]:
    """({unit: {label, families}}, {family: units}, "") for the gallery, or empty ones and the line to show."""
    held, problem = database()
    if held is None:
        return {}, {}, problem
    try:
        return held.layer_badges(model_id, layer), held.layer_families(model_id, layer), ""
    except NotesError as exc:
        return {}, {}, unavailable(exc)


def family_filter(where, fams: dict[str, list[int]], **kw) -> set[int] | None:
    """A selectbox over the layer's families, kept in the URL as `&family=NAME`; the chosen family's units, or
    None for all. An unknown family in the URL gets a warning (url_widgets) and all units."""
    wanted = st.query_params.get("family")
    if not fams and not wanted:
        return None
    options = {"": "all units", **{name: f"{name} ({len(units)})" for name, units in fams.items()}}
    family, _ = url_widgets.choice(where, "Family", options, "family", "", **kw)
    return set(fams[family]) if family else None


def by_family(units, fams: dict[str, list[int]]) -> list[tuple[str, object]]:
    """A gallery page's rows (a frame with `unit`) per family, titled with the count (a unit in two families is
    in both), then the rows in no family; empty groups left out."""
    groups = [(f"{name} ({len(rows)})", rows) for name, members in fams.items()
              if len(rows := units[units["unit"].isin(members)])]
    rest = units[~units["unit"].isin({u for members in fams.values() for u in members})]
    return groups + ([(f"In no family ({len(rest)})", rest)] if len(rest) else [])
