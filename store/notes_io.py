"""Notes out and in: `microscope notes export --format csv|json` and `microscope notes import FILE`.

One row per annotated unit: model_id, layer, unit, label, families (`;`-joined), note, stars (`;`-joined
emails). Import replaces what is written about each unit of the file with the file's values (units not in the
file are left alone), so importing the same file twice changes nothing and export -> import -> export gives the
same file. The whole file is checked before anything is written, and written in one transaction: a bad file is
refused with one line naming its row, and nothing is half-imported.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from store import notes as db
from store.notes import NotesError, check_families, check_label, check_note

COLUMNS = ("model_id", "layer", "unit", "label", "families", "note", "stars")


def export_rows(held: db.Notes) -> list[dict]:
    rows = []
    for model_id, layer, unit in held.annotated():
        got = held.get(model_id, layer, unit)
        rows.append({"model_id": model_id, "layer": layer, "unit": unit, "label": got.label,
                     "families": list(got.families), "note": got.note, "stars": list(got.stars)})
    return rows


def dumps(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "families": ";".join(row["families"]), "stars": ";".join(row["stars"])})
    return out.getvalue()


def _split(value) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in str(value or "").split(";") if v.strip()]


def parse(path: str | Path) -> list[dict]:
    """The rows of an export file (JSON if it starts with `[`, else CSV), each checked; a bad one raises
    NotesError naming it (CSV rows are counted from 2, the line after the header)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NotesError(f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}")
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotesError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        numbered, where = list(enumerate(raw, 1)), "item"
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in ("model_id", "layer", "unit") if c not in (reader.fieldnames or [])]
        if missing:
            raise NotesError(f"{path}: not a notes export: no column {', '.join(missing)}")
        numbered, where = list(enumerate(reader, 2)), "row"
    rows, seen = [], {}
    for number, raw_row in numbered:
        try:
            row = _check(raw_row)
        except NotesError as exc:
            raise NotesError(f"{path}: {where} {number}: {exc}") from None
        key = (row["model_id"], row["layer"], row["unit"])
        if key in seen:
            raise NotesError(f"{path}: {where} {number}: unit {key[0]}@{key[1]}:{key[2]} is also in {where} "
                             f"{seen[key]}")
        seen[key] = number
        rows.append(row)
    return rows


def _check(raw) -> dict:
    if not isinstance(raw, dict):
        raise NotesError("expected an object with model_id, layer and unit")
    model_id, layer, unit = ("" if raw.get(k) is None else str(raw[k]).strip() for k in ("model_id", "layer", "unit"))
    if not model_id or not layer:
        raise NotesError("model_id and layer must not be empty")
    if not unit.isdigit():
        raise NotesError(f"unit must be a whole number, got {unit[:40]!r}")
    emails = sorted({s.strip() for s in _split(raw.get("stars")) if s.strip()})
    if any(len(e) > 320 for e in emails):
        raise NotesError("a star's user is at most 320 characters")
    return {"model_id": model_id, "layer": layer, "unit": int(unit), "label": check_label(raw.get("label") or ""),
            "note": check_note(raw.get("note") or ""), "families": check_families(_split(raw.get("families"))),
            "stars": tuple(emails)}


def import_rows(held: db.Notes, rows: list[dict], author: str) -> int:
    """Write the rows in one transaction; returns how many units changed."""
    held._writable()
    changed = 0
    try:
        with held.engine.begin() as con:
            for row in rows:
                key = (row["model_id"], row["layer"], row["unit"])
                current = held._get(con, *key)
                at = db.now()
                values_differ = (current.label, current.note, current.families) != (row["label"], row["note"],
                                                                                    row["families"])
                if values_differ:
                    held._bump(con, *key, current.revision, author, at, current, {**row, "seen": current.revision})
                    held._write(con, current, row, author, at)
                if current.stars != row["stars"]:
                    _set_stars(con, key, set(current.stars), set(row["stars"]), author, at)
                changed += values_differ or current.stars != row["stars"]
    except NotesError:
        raise
    except SQLAlchemyError as exc:
        raise db.NotesUnavailable(f"import failed, nothing imported: {exc.__class__.__name__}") from None
    return changed


def _set_stars(con, key, old: set, new: set, author: str, at: str) -> None:
    model_id, layer, unit = key
    where = db.Notes._where(db.stars, model_id, layer, unit)
    for user in sorted(old - new):
        con.execute(db.stars.delete().where(where, db.stars.c.user_email == user))
    for user in sorted(new - old):
        con.execute(db.stars.insert().values(model_id=model_id, layer=layer, unit=unit, user_email=user,
                                             starred_at=at))
    con.execute(db.history.insert().values(model_id=model_id, layer=layer, unit=unit, field="stars",
                                           old_value="; ".join(sorted(old)) or None,
                                           new_value="; ".join(sorted(new)) or None, author=author, at=at))
