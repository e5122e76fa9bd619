"""The notes database (store/notes.py), every test against a SQLite file and a real PostgreSQL server."""

import os
import threading

import pytest
import sqlalchemy as sa

from store import notes as db
from store.notes import Notes, NotesError, NotesReadOnly, NotesUnavailable, StaleEdit
from store.queries import Store

M = "tiny net/v1&x"


@pytest.fixture
def held(notes_url):
    opened = Notes.open(notes_url, readonly=False)
    yield opened
    opened.close()


def save(held, unit=1, seen=0, label="", note="", families=(), author="ada@lab.org", layer="2"):
    return held.save(M, layer, unit, label=label, note=note, families=list(families), author=author, seen=seen)


def test_a_new_database_gets_the_schema_and_its_version(held):
    assert held.version() == db.NOTES_VERSION
    assert held.migrate() == db.NOTES_VERSION  # opening again is a no-op
    assert held.get(M, "2", 1).revision == 0 and held.get(M, "2", 1).empty


def test_a_newer_database_is_refused_in_one_line(held):
    with held.engine.begin() as con:
        con.execute(db.schema_table.update().values(version=db.NOTES_VERSION + 1))
    with pytest.raises(NotesError, match="upgrade Microscope"):
        Notes.open(held.url, readonly=False)


def test_every_edit_writes_history_rows_with_old_and_new_values(held):
    first = save(held, label="curve detector", note="Fires on *curves*.", families=["curves"])
    assert (first.revision, first.label, first.families, first.updated_by) == (1, "curve detector", ("curves",),
                                                                               "ada@lab.org")
    second = save(held, seen=1, label="curve detector, left", note="Fires on *curves*.", families=["curves", "edges"],
                  author="bob@lab.org")
    assert second.revision == 2 and second.label_by == "bob@lab.org" and second.note_by == "ada@lab.org"
    rows = held.history(M, "2", 1)
    changes = [(r["field"], r["old_value"], r["new_value"], r["author"]) for r in rows]
    assert changes == [
        ("families", "curves", "curves; edges", "bob@lab.org"),
        ("label", "curve detector", "curve detector, left", "bob@lab.org"),
        ("families", None, "curves", "ada@lab.org"),
        ("note", None, "Fires on *curves*.", "ada@lab.org"),
        ("label", None, "curve detector", "ada@lab.org"),
    ]
    assert all(r["at"].endswith("Z") for r in rows)
    assert save(held, seen=2, label="curve detector, left", note="Fires on *curves*.",
                families=["edges", "curves"]).revision == 2  # nothing changed: no new revision, no history
    assert len(held.history(M, "2", 1)) == 5


def test_a_stale_save_is_refused_with_both_versions_and_overwrites_nothing(held):
    save(held, label="curves")
    theirs = save(held, seen=1, label="curves (Ada)", author="ada@lab.org")
    with pytest.raises(StaleEdit) as raised:
        save(held, seen=1, label="edges (Bob)", note="mine", author="bob@lab.org")
    assert raised.value.theirs.label == "curves (Ada)" and raised.value.theirs.revision == 2
    assert raised.value.yours["label"] == "edges (Bob)" and raised.value.yours["note"] == "mine"
    message = str(raised.value)
    assert "ada@lab.org" in message and "revision 2" in message and "revision 1" in message
    assert held.get(M, "2", 1) == theirs
    assert len(held.history(M, "2", 1)) == 2


def test_two_first_saves_of_the_same_unit_one_wins_the_other_is_told(held):
    save(held, unit=5, label="mine")
    with pytest.raises(StaleEdit):
        save(held, unit=5, seen=0, label="theirs", author="bob@lab.org")
    assert held.get(M, "2", 5).label == "mine"


def test_concurrent_saves_on_one_revision_let_exactly_one_through(held):
    save(held, unit=7, label="start")
    outcomes = []

    def editor(name):
        try:
            save(held, unit=7, seen=1, label=f"by {name}", author=name)
            outcomes.append("saved")
        except StaleEdit:
            outcomes.append("stale")

    threads = [threading.Thread(target=editor, args=(f"user{i}@lab.org",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["saved"] + ["stale"] * 5
    assert held.get(M, "2", 7).revision == 2
    assert [r["field"] for r in held.history(M, "2", 7)] == ["label", "label"]


def test_limits_have_clear_messages(held):
    assert save(held, label="x" * db.LABEL_MAX).label == "x" * db.LABEL_MAX
    with pytest.raises(NotesError, match="a label is at most 80 characters; this one has 81"):
        save(held, seen=1, label="x" * 81)
    with pytest.raises(NotesError, match="a note is at most 10,000 characters; this one has 10,001"):
        save(held, seen=1, note="y" * 10_001)
    with pytest.raises(NotesError, match="bad family name"):
        save(held, seen=1, families=["<script>"])
    with pytest.raises(NotesError, match="one line"):
        save(held, seen=1, label="two\nlines")
    assert held.get(M, "2", 1).revision == 1


def test_read_only_refuses_every_write(held):
    save(held, label="kept")
    ro = Notes.open(held.url, readonly=True)
    try:
        with pytest.raises(NotesReadOnly, match="MICROSCOPE_NOTES_READONLY"):
            ro.save(M, "2", 1, label="changed", note="", families=[], author="ada@lab.org", seen=1)
        with pytest.raises(NotesReadOnly):
            ro.star(M, "2", 1, "ada@lab.org")
        assert ro.get(M, "2", 1).label == "kept"  # reading still works
    finally:
        ro.close()


def test_the_readonly_variable_is_read(notes_url, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_NOTES_READONLY", "1")
    Notes(notes_url).migrate()  # tables first: a read-only open of an empty database has nothing to show
    opened = Notes.open(notes_url)
    try:
        assert opened.readonly
        with pytest.raises(NotesReadOnly):
            save(opened, label="no")
    finally:
        opened.close()


def test_sql_in_a_label_is_just_characters(held):
    evil = "x'); DROP TABLE labels; --"
    save(held, label=evil, note="50% of _all_ \\ images")
    assert held.get(M, "2", 1).label == evil
    assert [r["unit"] for r in held.search("DROP TABLE")] == [1]
    assert held.search("%") == [] or [r["unit"] for r in held.search("%")] == [1]  # % is a character, not a wildcard
    save(held, unit=2, label="plain")
    assert [r["unit"] for r in held.search("50%")] == [1]
    assert [r["unit"] for r in held.search("_all_")] == [1]
    assert held.search("a_l") == []  # `_` is not a one-character wildcard


def test_search_finds_words_in_labels_notes_and_families_across_models(held):
    save(held, unit=1, label="Curve detector")
    save(held, unit=2, note="responds to curved edges near the centre")
    save(held, unit=3, families=["curves"])
    held.save("other-model", "blocks.3", 9, label="high-low frequency", note="", families=["hilo"],
              author="bob@lab.org", seen=0)
    held.save("other-model", "blocks.3", 10, label="", note="a CURVE too", families=[], author="bob@lab.org", seen=0)
    found = [(r["model_id"], r["unit"]) for r in held.search("curve")]
    assert found == [("other-model", 10), (M, 1), (M, 2), (M, 3)]
    assert [r["unit"] for r in held.search("curve detector")] == [1]  # every word must match
    assert [r["families"] for r in held.search("hilo")] == [["hilo"]]
    assert held.search("   ") == []


def test_layer_badges_and_families(held):
    save(held, unit=1, label="curve", families=["curves", "edges"])
    save(held, unit=4, families=["curves"])
    save(held, unit=2, layer="0", label="other layer")
    assert held.layer_badges(M, "2") == {1: {"label": "curve", "families": ["curves", "edges"]},
                                         4: {"label": "", "families": ["curves"]}}
    assert held.layer_families(M, "2") == {"curves": [1, 4], "edges": [1]}


def test_stars_are_per_user(held):
    assert held.star(M, "2", 3, "ada@lab.org") is True
    assert held.star(M, "2", 3, "ada@lab.org") is False  # already starred
    held.star(M, "0", 1, "ada@lab.org")
    held.star(M, "2", 3, "bob@lab.org")
    save(held, unit=3, label="starred one")
    assert [(s["layer"], s["unit"], s["label"]) for s in held.starred("ada@lab.org")] == [("0", 1, ""),
                                                                                          ("2", 3, "starred one")]
    assert held.star(M, "2", 3, "ada@lab.org", on=False) is True
    assert [s["unit"] for s in held.starred("ada@lab.org")] == [1]
    assert held.get(M, "2", 3).stars == ("bob@lab.org",)
    assert [r["field"] for r in held.history(M, "2", 3)][-1] == "star"


@pytest.mark.integration  # the app's fixture store is built by a tiny model run
def test_notes_survive_rebuilding_the_store_and_orphans_are_listed(held, app_store, tmp_path):
    save(held, unit=3, label="kept")
    save(held, unit=15, layer="2", note="last unit")
    held.save(M, "gone.layer", 0, label="layer removed", note="", families=[], author="ada@lab.org", seen=0)
    held.save("retired-model", "0", 0, label="model removed", note="", families=[], author="ada@lab.org", seen=0)
    held.save(M, "2", 99, label="out of range", note="", families=[], author="ada@lab.org", seen=0)
    # A rebuilt store is a new file (ingest replaces it): the notes, keyed by (model, layer, unit), still apply.
    rebuilt = tmp_path / "rebuilt.duckdb"
    rebuilt.write_bytes(app_store.read_bytes())
    store = Store(rebuilt)
    try:
        orphans = {(o["model_id"], o["layer"], o["unit"]): o["why"] for o in held.orphans(store)}
    finally:
        store.close()
    assert orphans == {(M, "gone.layer", 0): "layer not in the store", ("retired-model", "0", 0): "model not in the "
                       "store", (M, "2", 99): "the layer has units 0 to 15"}
    assert held.get(M, "2", 3).label == "kept"  # nothing is dropped


def test_an_unreachable_database_says_notes_are_unavailable(tmp_path):
    blocked = tmp_path / "no-such-folder" / "x" / "notes.sqlite"
    (tmp_path / "no-such-folder").write_text("a file where a folder should be")
    with pytest.raises(NotesError, match="notes are unavailable|cannot"):
        Notes.open(f"sqlite:///{blocked}", readonly=False)
    with pytest.raises(NotesUnavailable, match="notes are unavailable"):
        Notes.open("postgresql+psycopg://nobody@127.0.0.1:1/none", readonly=False)


def test_a_locked_sqlite_file_makes_a_save_fail_clearly(tmp_path):
    path = tmp_path / "notes.sqlite"
    held = Notes.open(f"sqlite:///{path}", readonly=False)
    held.engine.dispose()
    held.engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})
    locker = sa.create_engine(f"sqlite:///{path}").raw_connection()
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(NotesUnavailable, match="notes are unavailable: .*locked"):
            save(held, label="blocked")
    finally:
        locker.rollback()
        locker.close()
    assert save(held, label="now it works").revision == 1
    held.close()


def test_the_default_database_lies_beside_the_store(monkeypatch, tmp_path):
    monkeypatch.delenv("MICROSCOPE_NOTES", raising=False)
    assert db.default_url(str(tmp_path / "team.duckdb")) == f"sqlite:///{tmp_path / 'team.notes.sqlite'}"
    monkeypatch.setenv("MICROSCOPE_NOTES", "postgresql+psycopg://u@db.lab:5432/notes")
    assert db.default_url(str(tmp_path / "team.duckdb")) == "postgresql+psycopg://u@db.lab:5432/notes"


def test_a_bad_url_is_one_line():
    with pytest.raises(NotesError, match="bad notes database URL"):
        Notes("nonsense://x")


if os.environ.get("MICROSCOPE_REQUIRE_POSTGRES"):
    def test_postgres_is_really_exercised(postgres_url):
        """CI must run the PostgreSQL half, not skip it."""
        assert postgres_url.startswith("postgresql+psycopg://")
