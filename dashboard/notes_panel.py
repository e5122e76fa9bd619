"""The unit page's notes: label, families, note (Markdown, rendered without HTML), star, who and when, the
history of edits, and what a stale save shows (the saved version beside the refused one).

The form's widgets hold what the editor typed, keyed per unit; `-seen` holds the revision the form was loaded
from, and every save carries it (store.notes: a stale save writes nothing). Saving happens in the submit
callback, before the rerun, so that a successful save can reload the form from the database while a failed one
leaves the typed text where it was."""

from __future__ import annotations

import hashlib

import streamlit as st

from dashboard import data, html, links, notes
from store.notes import LABEL_MAX, NOTE_MAX, NotesError, StaleEdit, UnitNotes

HISTORY_SHOWN = 50


def _prefix(name: str) -> str:
    return "notes-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def _load(k: str, saved: UnitNotes) -> None:
    st.session_state[f"{k}-label"] = saved.label
    st.session_state[f"{k}-families"] = list(saved.families)
    st.session_state[f"{k}-note"] = saved.note
    st.session_state[f"{k}-seen"] = saved.revision


def _save(held, ref, k: str, author: str) -> None:
    state = st.session_state
    try:
        saved = held.save(ref.model_id, ref.layer_name, ref.unit, label=state[f"{k}-label"], note=state[f"{k}-note"],
                          families=state[f"{k}-families"], author=author, seen=state[f"{k}-seen"])
    except StaleEdit as exc:
        state[f"{k}-conflict"] = (exc.theirs, exc.yours)
        state[f"{k}-message"] = ("error", f"Not saved: {exc}. Both versions are below.")
    except NotesError as exc:  # over a limit, read-only, database gone: the typed text stays in the form
        state[f"{k}-message"] = ("error", f"Not saved: {exc}")
    else:
        _load(k, saved)
        state.pop(f"{k}-conflict", None)
        state[f"{k}-message"] = ("success", f"Saved (revision {saved.revision}).")


def _rebase(k: str, theirs: UnitNotes, keep_mine: bool) -> None:
    """After a conflict: edit on top of the saved version, keeping what was typed, or take the saved one."""
    if keep_mine:
        st.session_state[f"{k}-seen"] = theirs.revision
    else:
        _load(k, theirs)
    st.session_state.pop(f"{k}-conflict", None)
    st.session_state.pop(f"{k}-message", None)


def _star(held, ref, user: str, on: bool, k: str) -> None:
    try:
        held.star(ref.model_id, ref.layer_name, ref.unit, user, on)
    except NotesError as exc:
        st.session_state[f"{k}-message"] = ("error", f"Not starred: {exc}")


def render(ref) -> None:
    """The notes panel of one unit; one line instead where the notes database is unavailable. Its heading is in
    the HTML head block, so that a lens's own subheaders stay the page's only ones."""
    held, problem = notes.database()
    try:
        saved = held.get(ref.model_id, ref.layer_name, ref.unit) if held else None
    except NotesError as exc:
        saved, problem = None, notes.unavailable(exc)
    if saved is None:
        st.caption(problem, help="The store's evidence above is unaffected; notes come back with the database.")
        return
    author, why_not = notes.author()
    k = _prefix(saved.name)
    if f"{k}-label" not in st.session_state:  # first view of this unit in this session, or back to it
        _load(k, saved)

    st.html(html.notes_summary(saved))
    if saved.note:
        st.markdown(saved.note)  # no unsafe_allow_html: HTML in a note is shown as text, never run
    message = st.session_state.pop(f"{k}-message", None)
    if message:
        (st.success if message[0] == "success" else st.error)(message[1])
    conflict = st.session_state.get(f"{k}-conflict")
    if conflict:
        _conflict(k, *conflict)

    mine = bool(author) and author in saved.stars
    st.button("Unstar" if mine else "Star", icon=":material/star:" if mine else ":material/star_border:",
              key=f"{k}-star", disabled=author is None, on_click=_star, args=(held, ref, author, not mine, k),
              help=why_not or f"{len(saved.stars)} starred this unit")
    if author is None:
        st.caption(why_not)
    elif saved.revision != st.session_state[f"{k}-seen"]:
        st.caption(f"Someone saved revision {saved.revision} since you opened this form; saving will show both.")
    with st.form(f"{k}-form", border=True):
        st.text_input("Label", key=f"{k}-label", max_chars=LABEL_MAX, disabled=author is None,
                      placeholder="a short name: curve detector")
        known = held.layer_families(ref.model_id, ref.layer_name)
        options = sorted(set(known) | set(st.session_state[f"{k}-families"]))
        st.multiselect("Families", options, key=f"{k}-families", accept_new_options=True, disabled=author is None,
                       placeholder="type a family to add it", help="named groups within this layer")
        st.text_area("Note (Markdown)", key=f"{k}-note", max_chars=NOTE_MAX, height=140, disabled=author is None)
        st.form_submit_button("Save", icon=":material/save:", disabled=author is None, on_click=_save,
                              args=(held, ref, k, author))
    _history(held, ref)


def _conflict(k: str, theirs: UnitNotes, yours: dict) -> None:
    left, right = st.columns(2)
    left.markdown(f"**Saved version** (revision {theirs.revision}, by {theirs.updated_by or '?'})")
    left.html(html.notes_version(theirs.label, theirs.families, theirs.note))
    right.markdown("**Your version** (not saved)")
    right.html(html.notes_version(yours["label"], yours["families"], yours["note"]))
    row = st.container(horizontal=True)
    row.button("Save mine on top of it", key=f"{k}-keep", on_click=_rebase, args=(k, theirs, True),
               help="keeps your text in the form; press Save again to replace the saved version")
    row.button("Take the saved version", key=f"{k}-take", on_click=_rebase, args=(k, theirs, False))


def _history(held, ref) -> None:
    try:
        rows = held.history(ref.model_id, ref.layer_name, ref.unit)
    except NotesError:
        return
    if not rows:
        return
    with st.expander(f"History ({len(rows)} edits)"):
        st.html(html.table([("at", "When"), ("author", "Who"), ("field", "What"), ("old_value", "Before"),
                            ("new_value", "After")],
                           [{**r, "old_value": _short(r["old_value"]), "new_value": _short(r["new_value"])}
                            for r in rows[:HISTORY_SHOWN]]))


def _short(text: str | None, limit: int = 200) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + "…"


def search_results(text: str) -> list[dict] | None:
    """Units whose labels, notes or families hold the words of `text`, drawn as a table; None (after one line)
    where notes are unavailable."""
    held, problem = notes.database()
    try:
        hits = held.search(text) if held else None
    except NotesError as exc:
        hits, problem = None, notes.unavailable(exc)
    if hits is None:
        st.caption(problem)
        return None
    if hits:
        st.subheader(f"Notes matching “{text.strip()}”", anchor=False)
        st.html(html.table([("unit", "Unit"), ("label", "Label"), ("families", "Families"), ("note", "Note")], [
            {"unit": {"href": links.unit_href(h["model_id"], h["layer"], h["unit"]),
                      "text": links.unit_id(h["model_id"], h["layer"], h["unit"])},
             "label": h["label"], "families": ", ".join(h["families"]), "note": _short(h["note"], 160)}
            for h in hits]))
    return hits


def starred() -> None:
    """The signed-in user's (or `local`'s) starred units."""
    author, _ = notes.author()
    held, problem = notes.database()
    if author is None or held is None:
        return
    try:
        rows = held.starred(author)
    except NotesError as exc:
        st.caption(notes.unavailable(exc))
        return
    with st.expander(f"My starred units ({len(rows)})", expanded=False):
        if not rows:
            st.caption("Star a unit on its page to find it here.")
            return
        st.html(html.table([("unit", "Unit"), ("label", "Label"), ("starred_at", "Starred")], [
            {"unit": {"href": links.unit_href(r["model_id"], r["layer"], r["unit"]),
                      "text": links.unit_id(r["model_id"], r["layer"], r["unit"])},
             "label": r["label"], "starred_at": r["starred_at"]} for r in rows]))


def orphans(key) -> None:
    """Notes on units that this store does not hold (a layer renamed, a model removed): listed, never dropped."""
    held, _ = notes.database()
    try:
        lost = held.orphans(data.open_store(*key)) if held else []
    except NotesError:
        return
    if lost:
        with st.expander(f"Notes on units not in this store ({len(lost)})"):
            st.html(html.table([("unit", "Unit"), ("why", "Why"), ("label", "Label"), ("note", "Note")], [
                {**o, "unit": links.unit_id(o["model_id"], o["layer"], o["unit"]), "note": _short(o["note"], 160)}
                for o in lost]))
