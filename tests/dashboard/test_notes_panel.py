"""The notes on the dashboard through AppTest (dashboard/notes_panel.py, dashboard/notes.py), on the fixture
store and a notes database that is once SQLite and once a real PostgreSQL: the unit page's panel (save, history,
stale save, limits, read-only, unavailable), the gallery's badges and `&family=`, and search by words."""

from html import escape

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import notes as dash_notes
from store.notes import Notes
from tests.app_support import MODEL_ID, html, run, texts, tiles

pytestmark = pytest.mark.app


@pytest.fixture
def notes_env(store_env, notes_url, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_NOTES", notes_url)
    monkeypatch.delenv("MICROSCOPE_NOTES_READONLY", raising=False)
    dash_notes._open.clear()  # the server keeps one open database per URL; each test has a fresh one
    held = Notes.open(notes_url, readonly=False)
    yield held
    held.close()
    dash_notes._open.clear()


def unit_page(unit=3, layer="2") -> AppTest:
    return run("unit", model=MODEL_ID, layer=layer, unit=str(unit))


def field(at: AppTest, label: str):
    return next(w for w in [*at.text_input, *at.text_area, *at.multiselect] if w.label == label)


def press(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_label_note_and_family_saved_on_the_unit_page(notes_env):
    at = unit_page()
    assert "No label yet." in html(at)
    field(at, "Label").set_value("curve detector")
    field(at, "Note (Markdown)").set_value("Fires on **curves** facing left.")
    field(at, "Families").set_value(["curves"])
    press(at, "Save")
    assert [s.value for s in at.success] == ["Saved (revision 1)."]
    saved = notes_env.get(MODEL_ID, "2", 3)
    assert (saved.label, saved.note, saved.families, saved.updated_by) == (
        "curve detector", "Fires on **curves** facing left.", ("curves",), "local")
    assert "Fires on **curves** facing left." in [m.value for m in at.markdown]
    assert "label by local" in html(at) and "When" in html(at)  # who and when, and the history table
    assert [e.label for e in at.expander if e.label.startswith("History")] == ["History (3 edits)"]


def test_a_stale_save_shows_both_versions_and_keeps_the_typed_text(notes_env):
    at = unit_page()
    notes_env.save(MODEL_ID, "2", 3, label="Ada's label", note="", families=[], author="ada@lab.org", seen=0)
    field(at, "Label").set_value("Bob's label")
    press(at, "Save")
    assert at.error and "was changed by ada@lab.org" in at.error[0].value
    assert "Ada&#x27;s label" in html(at) and "Bob&#x27;s label" in html(at)  # both versions shown
    assert field(at, "Label").value == "Bob's label"
    assert notes_env.get(MODEL_ID, "2", 3).label == "Ada's label"  # nothing overwritten
    press(at, "Save mine on top of it")
    press(at, "Save")
    assert notes_env.get(MODEL_ID, "2", 3).label == "Bob's label"
    assert [r["new_value"] for r in notes_env.history(MODEL_ID, "2", 3)] == ["Bob's label", "Ada's label"]


def test_a_refused_save_says_why_and_keeps_the_text_in_the_form(notes_env):
    at = unit_page()
    assert field(at, "Label").max_chars == 80 and field(at, "Note (Markdown)").max_chars == 10_000
    field(at, "Label").set_value("keep me")
    field(at, "Note (Markdown)").set_value("a long thought")
    field(at, "Families").set_value(["bad;name"])
    press(at, "Save")
    assert at.error[0].value.startswith("Not saved: bad family name 'bad;name'")
    assert (field(at, "Label").value, field(at, "Note (Markdown)").value) == ("keep me", "a long thought")
    assert notes_env.get(MODEL_ID, "2", 3).revision == 0


def test_read_only_disables_the_form(notes_env, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_NOTES_READONLY", "1")
    at = unit_page()
    assert field(at, "Label").disabled and "Notes are read-only on this Microscope." in texts(at)


def test_an_unreachable_database_leaves_the_evidence_and_says_so(store_env, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_NOTES", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    dash_notes._open.clear()
    at = unit_page()
    assert any(c.value.startswith("Notes are unavailable:") for c in at.caption)
    assert ".ms-ex-grid" in html(at) or "ms-ex" in html(at)  # the dataset lens is there
    layer = run("layer", model=MODEL_ID, layer="2")
    assert len(tiles(layer)) == 16 and any(c.value.startswith("Notes are unavailable:") for c in layer.caption)


def test_gallery_badges_and_the_family_filter(notes_env):
    for unit, label, fams in ((1, "curve", ["curves"]), (4, "", ["curves", "edges"]), (5, "<b>bold</b>", [])):
        notes_env.save(MODEL_ID, "2", unit, label=label, note="", families=fams, author="ada@lab.org", seen=0)
    at = run("layer", model=MODEL_ID, layer="2")
    assert len(tiles(at)) == 16
    assert '<div class="ms-note">curve</div>' in html(at) and '<span class="ms-fam">edges</span>' in html(at)
    assert "&lt;b&gt;bold&lt;/b&gt;" in html(at) and "<b>bold</b>" not in html(at)
    assert tiles(run("layer", model=MODEL_ID, layer="2", family="curves")) == [1, 4]
    unknown = run("layer", model=MODEL_ID, layer="2", family="nope")
    assert "Unknown family" in unknown.warning[0].value and len(tiles(unknown)) == 16


def test_gallery_grouped_by_family(notes_env):
    for unit, fams in ((1, ["curves"]), (4, ["curves", "edges"]), (9, ["edges"])):
        notes_env.save(MODEL_ID, "2", unit, label="", note="", families=fams, author="ada@lab.org", seen=0)
    at = run("layer", model=MODEL_ID, layer="2", group="true")
    assert [s.value for s in at.subheader][:3] == ["curves (2)", "edges (2)", "In no family (13)"]
    assert tiles(at) == [1, 4, 4, 9] + [u for u in range(16) if u not in (1, 4, 9)]  # 4 is in both families


def test_search_finds_units_by_label_note_and_family_across_models(notes_env):
    notes_env.save(MODEL_ID, "2", 1, label="Curve detector", note="", families=[], author="a@x", seen=0)
    notes_env.save(MODEL_ID, "0", 2, label="", note="sees curved edges", families=[], author="a@x", seen=0)
    notes_env.save("another-model", "b3", 7, label="", note="", families=["curves"], author="a@x", seen=0)
    at = run("search", q="curve", model=MODEL_ID)
    page = html(at)
    assert "another-model@b3:7" in page and escape(f"{MODEL_ID}@2:1") in page and escape(f"{MODEL_ID}@0:2") in page
    assert not at.error  # the words were found: no "unknown layer" for them
    assert run("search", q="zebra", model=MODEL_ID).error  # nothing found: the id search's message


def test_my_starred_units(notes_env):
    at = press(unit_page(unit=6), "Star")
    assert notes_env.get(MODEL_ID, "2", 6).stars == ("local",)
    assert any(b.label == "Unstar" for b in at.button)
    search = run("search", model=MODEL_ID)
    assert [e.label for e in search.expander if e.label.startswith("My starred")] == ["My starred units (1)"]
    assert escape(f"{MODEL_ID}@2:6") in html(search)


def test_notes_on_units_the_store_lacks_are_listed_on_the_search_page(notes_env):
    notes_env.save(MODEL_ID, "9", 0, label="layer gone", note="", families=[], author="a@x", seen=0)
    notes_env.save(MODEL_ID, "2", 1, label="still here", note="", families=[], author="a@x", seen=0)
    at = run("search", model=MODEL_ID)
    assert [e.label for e in at.expander if e.label.startswith("Notes on units")] == [
        "Notes on units not in this store (1)"]
    assert "layer gone" in html(at) and "layer not in the store" in html(at)
