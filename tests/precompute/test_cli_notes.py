"""`microscope notes export|import` (store/notes_io.py) against a SQLite file and a real PostgreSQL: the round
trip, an import that changes nothing the second time, and a bad file refused in one line with nothing imported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from precompute.cli import main
from store.notes import Notes

ROOT = Path(__file__).resolve().parents[2]
M = "tiny net/v1&x"


@pytest.fixture
def filled(notes_url):
    held = Notes.open(notes_url, readonly=False)
    held.save(M, "2", 1, label='curve, "left"', note="Line one\nline two, with commas; and ü", families=["curves",
              "edges"], author="ada@lab.org", seen=0)
    held.save(M, "2", 5, label="x'); DROP TABLE labels; --", note="", families=[], author="bob@lab.org", seen=0)
    held.save("other/model", "blocks.3", 0, label="", note="", families=["hilo"], author="ada@lab.org", seen=0)
    held.star(M, "0", 2, "ada@lab.org")
    yield held
    held.close()


def export(capsys, url: str, fmt: str) -> str:
    assert main(["notes", "export", "--format", fmt, "--notes", url]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_elsewhere_gives_the_same_notes(capsys, filled, tmp_path, fmt):
    text = export(capsys, filled.url, fmt)
    if fmt == "json":
        rows = json.loads(text)
        assert [(r["model_id"], r["layer"], r["unit"]) for r in rows] == [("other/model", "blocks.3", 0), (M, "0", 2),
                                                                           (M, "2", 1), (M, "2", 5)]
        assert rows[1]["stars"] == ["ada@lab.org"] and rows[2]["families"] == ["curves", "edges"]
    path = tmp_path / f"notes.{fmt}"
    path.write_text(text)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    assert main(["notes", "import", str(path), "--notes", elsewhere]) == 0
    assert capsys.readouterr().out == f"{path}: 4 units, 4 changed, 0 already as in the file\n"
    assert export(capsys, elsewhere, fmt) == text
    copy = Notes.open(elsewhere, readonly=False)
    assert copy.get(M, "2", 1).note == "Line one\nline two, with commas; and ü"
    assert copy.history(M, "2", 1)[0]["author"] == "import"
    copy.close()


def test_importing_the_same_file_twice_changes_nothing(capsys, filled, tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text(export(capsys, filled.url, "csv"))
    before = len(filled.history(M, "2", 1)), filled.get(M, "2", 1).revision
    for _ in range(2):
        assert main(["notes", "import", str(path), "--notes", filled.url]) == 0
        assert capsys.readouterr().out == f"{path}: 4 units, 0 changed, 4 already as in the file\n"
    assert (len(filled.history(M, "2", 1)), filled.get(M, "2", 1).revision) == before


def test_an_import_replaces_the_values_of_the_units_in_the_file(capsys, filled, tmp_path):
    path = tmp_path / "edit.json"
    path.write_text(json.dumps([{"model_id": M, "layer": "2", "unit": 1, "label": "renamed", "families": ["curves"],
                                 "note": "", "stars": []}]))
    assert main(["notes", "import", str(path), "--notes", filled.url, "--author", "review"]) == 0
    got = filled.get(M, "2", 1)
    assert (got.label, got.families, got.note, got.updated_by) == ("renamed", ("curves",), "", "review")
    assert filled.get(M, "2", 5).label == "x'); DROP TABLE labels; --"  # a unit not in the file is untouched


@pytest.mark.parametrize("bad, message", [
    ('{"label": "' + "x" * 81 + '"}', "item 3: a label is at most 80 characters; this one has 81"),
    ('{"unit": "two"}', "item 3: unit must be a whole number, got 'two'"),
    ('{"unit": 1}', "item 3: unit tiny net/v1&x@2:1 is also in item 1"),
    ('{"families": ["<b>"]}', "item 3: bad family name '<b>'"),
])
def test_a_bad_file_is_refused_in_one_line_naming_the_row_and_nothing_is_imported(capsys, notes_url, tmp_path, bad,
                                                                                  message):
    good = '{"model_id": "%s", "layer": "2", "unit": %d, "label": "fine"}'
    third = json.loads(good % (M, 9))
    third.update(json.loads(bad))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([json.loads(good % (M, 1)), json.loads(good % (M, 2)), third]))
    assert main(["notes", "import", str(path), "--notes", notes_url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"microscope: error: {path}: {message}") and err.count("\n") == 1
    held = Notes.open(notes_url, readonly=False)
    assert held.annotated() == []  # the good rows before it were not imported either
    held.close()


def test_a_bad_csv_row_is_named_by_its_line(capsys, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("model_id,layer,unit,label\nm,2,1,ok\nm,2,-3,no\n")
    assert main(["notes", "import", str(path), "--notes", f"sqlite:///{tmp_path / 'n.sqlite'}"]) == 1
    assert capsys.readouterr().err == (f"microscope: error: {path}: row 3: unit must be a whole number, got '-3'\n")
    path.write_text("just,some,columns\n1,2,3\n")
    assert main(["notes", "import", str(path), "--notes", f"sqlite:///{tmp_path / 'n.sqlite'}"]) == 1
    assert "not a notes export: no column model_id, layer, unit" in capsys.readouterr().err


def test_read_only_refuses_an_import(capsys, filled, tmp_path, monkeypatch):
    path = tmp_path / "notes.csv"
    path.write_text(export(capsys, filled.url, "csv"))
    monkeypatch.setenv("MICROSCOPE_NOTES_READONLY", "1")
    assert main(["notes", "import", str(path), "--notes", filled.url]) == 1
    assert "read-only" in capsys.readouterr().err


def test_the_default_database_lies_beside_the_store(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MICROSCOPE_NOTES", raising=False)
    assert main(["notes", "export", "--store", str(tmp_path / "team.duckdb")]) == 0
    assert capsys.readouterr().out == "model_id,layer,unit,label,families,note,stars\n"
    assert (tmp_path / "team.notes.sqlite").is_file()


def test_the_notes_commands_do_not_import_torch(tmp_path):
    code = ("import sys; from precompute.cli import main; rc = main(['notes', 'export', '--notes', "
            f"'sqlite:///{tmp_path / 'n.sqlite'}']); print('torch' in sys.modules, rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False 0", done.stderr


@pytest.mark.integration  # the app's fixture store is built by a tiny model run
def test_orphans_lists_the_notes_whose_unit_left_the_store(capsys, notes_url, app_store):
    held = Notes.open(notes_url, readonly=False)
    for model_id, layer, unit in ((M, "2", 3), (M, "2", 99), ("gone/model", "0", 0)):
        held.save(model_id, layer, unit, label=f"on {unit}", note="", families=[], author="a@x", seen=0)
    held.close()
    assert main(["notes", "orphans", "--notes", notes_url, "--store", str(app_store)]) == 0
    assert capsys.readouterr().out == ("gone/model@0:0\tmodel not in the store\ton 0\n"
                                       f"{M}@2:99\tthe layer has units 0 to 15\ton 99\n")
