"""The notes database: what a team writes about units (labels, families, notes, stars), apart from the store.

The asset store is a read-only build artefact; notes are what people write, so they live in a writable database
of their own, behind SQLAlchemy Core: by default a SQLite file beside the store (`NAME.notes.sqlite` beside
`NAME.duckdb`), or any SQLAlchemy URL in MICROSCOPE_NOTES (`postgresql+psycopg://...` for a hosted dashboard
with several replicas). Everything is keyed by (model_id, layer, unit), never by a row of the store, so notes
survive rebuilding or replacing it; a note whose unit left the store is listed by `orphans`, never dropped.

Tables (schema version NOTES_VERSION, kept in `notes_schema`, created and migrated by `open`):
  unit_revisions (model_id, layer, unit) -> revision, updated_by, updated_at: one counter per annotated unit,
      the anchor of optimistic concurrency for its label, families and note together
  labels         (model_id, layer, unit) -> label, author, updated_at
  notes          (model_id, layer, unit) -> body, author, updated_at
  families       (model_id, layer, family, unit) -> author, added_at: membership; a unit may be in several
  stars          (model_id, layer, unit, user_email) -> starred_at
  history        id -> model_id, layer, unit, field, old_value, new_value, author, at: one row per change

Concurrency: every `save` carries the revision its editor saw; the save bumps the revision only where it is
still that value (one conditional UPDATE, or an INSERT for a unit never written), in the same transaction as
the values and their history rows. A stale save raises `StaleEdit` with the saved version and the one that was
refused, and writes nothing. Never imports streamlit.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from store import config, remote
from store.errors import MicroscopeError, first_line

NOTES_VERSION = 1
LABEL_MAX = 80
NOTE_MAX = 10_000
FAMILY_MAX = 40
SEARCH_LIMIT = 200
# Family names are short words: they appear in URLs (&family=NAME) and in the export's `;`-joined column.
FAMILY_NAME = re.compile(r"[^\W_][\w .+-]*")

meta = sa.MetaData()


def _key_columns() -> list[sa.Column]:
    return [sa.Column("model_id", sa.String(400), primary_key=True),
            sa.Column("layer", sa.String(400), primary_key=True), sa.Column("unit", sa.Integer, primary_key=True)]


schema_table = sa.Table("notes_schema", meta, sa.Column("version", sa.Integer, nullable=False))
revisions = sa.Table("unit_revisions", meta, *_key_columns(), sa.Column("revision", sa.Integer, nullable=False),
                     sa.Column("updated_by", sa.String(320), nullable=False),
                     sa.Column("updated_at", sa.String(32), nullable=False))
labels = sa.Table("labels", meta, *_key_columns(), sa.Column("label", sa.String(LABEL_MAX), nullable=False),
                  sa.Column("author", sa.String(320), nullable=False),
                  sa.Column("updated_at", sa.String(32), nullable=False))
notes = sa.Table("notes", meta, *_key_columns(), sa.Column("body", sa.Text, nullable=False),
                 sa.Column("author", sa.String(320), nullable=False),
                 sa.Column("updated_at", sa.String(32), nullable=False))
families = sa.Table("families", meta, sa.Column("model_id", sa.String(400), primary_key=True),
                    sa.Column("layer", sa.String(400), primary_key=True),
                    sa.Column("family", sa.String(FAMILY_MAX), primary_key=True),
                    sa.Column("unit", sa.Integer, primary_key=True),
                    sa.Column("author", sa.String(320), nullable=False),
                    sa.Column("added_at", sa.String(32), nullable=False))
stars = sa.Table("stars", meta, *_key_columns(), sa.Column("user_email", sa.String(320), primary_key=True),
                 sa.Column("starred_at", sa.String(32), nullable=False))
history = sa.Table("history", meta, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                   sa.Column("model_id", sa.String(400), nullable=False),
                   sa.Column("layer", sa.String(400), nullable=False),
                   sa.Column("unit", sa.Integer, nullable=False), sa.Column("field", sa.String(16), nullable=False),
                   sa.Column("old_value", sa.Text), sa.Column("new_value", sa.Text),
                   sa.Column("author", sa.String(320), nullable=False), sa.Column("at", sa.String(32), nullable=False),
                   sa.Index("history_unit", "model_id", "layer", "unit"))

# Migrations from version N to N + 1, run in order in one transaction by `open`. Version 1 is the first.
MIGRATIONS: dict[int, object] = {}


class NotesError(MicroscopeError):
    """A note that cannot be saved or read, said in one line."""


class NotesUnavailable(NotesError):
    """The notes database cannot be reached, or is locked: pages still show the store, and say so."""


class NotesReadOnly(NotesError):
    """MICROSCOPE_NOTES_READONLY is set, or the user may not write."""


class StaleEdit(NotesError):
    """A save made on a view older than the saved version: nothing was written. `theirs` is what is saved now,
    `yours` what was refused."""

    def __init__(self, theirs: UnitNotes, yours: dict):
        self.theirs, self.yours = theirs, yours
        super().__init__(f"{theirs.name} was changed by {theirs.updated_by} at {theirs.updated_at} (revision "
                         f"{theirs.revision}) after you opened it (revision {yours['seen']}); nothing was saved")


@dataclass(frozen=True)
class UnitNotes:
    """What is written about one unit; revision 0 and empty values for a unit nobody wrote about."""

    model_id: str
    layer: str
    unit: int
    label: str = ""
    label_by: str | None = None
    label_at: str | None = None
    note: str = ""
    note_by: str | None = None
    note_at: str | None = None
    families: tuple[str, ...] = ()
    stars: tuple[str, ...] = ()
    revision: int = 0
    updated_by: str | None = None
    updated_at: str | None = None

    @property
    def name(self) -> str:
        return f"{self.model_id}@{self.layer}:{self.unit}"

    @property
    def empty(self) -> bool:
        return not (self.label or self.note or self.families or self.stars)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_url(store_location: str | None = None) -> str:
    """MICROSCOPE_NOTES, else a SQLite file beside a local store (`data/microscope.duckdb` ->
    `data/microscope.notes.sqlite`); beside the default store's place for a remote store, whose folder is
    not ours to write."""
    if config.notes_url():
        return config.notes_url()
    location = store_location or config.store_location()
    path = Path(config.DEFAULT_STORE if remote.is_remote(location) else location)
    stem = path.name[: -len(".duckdb")] if path.name.endswith(".duckdb") else path.name
    return f"sqlite:///{path.with_name(stem + '.notes.sqlite').resolve()}"


def check_label(text: str) -> str:
    text = (text or "").strip()
    if len(text) > LABEL_MAX:
        raise NotesError(f"a label is at most {LABEL_MAX} characters; this one has {len(text):,}")
    if "\n" in text or "\r" in text:
        raise NotesError("a label is one line; put longer text in the note")
    return text


def check_note(text: str) -> str:
    text = (text or "").rstrip()
    if len(text) > NOTE_MAX:
        raise NotesError(f"a note is at most {NOTE_MAX:,} characters; this one has {len(text):,}")
    return text


def check_family(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > FAMILY_MAX or not FAMILY_NAME.fullmatch(name):
        raise NotesError(f"bad family name {name[:60]!r}: up to {FAMILY_MAX} letters, digits, spaces and . + - _, "
                         "starting with a letter or digit")
    return name


def check_families(names) -> tuple[str, ...]:
    return tuple(sorted({check_family(n) for n in names}))


def _unavailable(exc: Exception) -> NotesUnavailable:
    return NotesUnavailable(f"notes are unavailable: {first_line(exc)[:200]}")


def _like(word: str) -> str:
    return "%" + word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Notes:
    """One notes database. `open` creates or migrates its schema; every method is one transaction."""

    def __init__(self, url: str, readonly: bool = False):
        self.url = url
        self.readonly = readonly
        # Give up on a locked SQLite file or an unreachable server after 5 s: the page then says notes are unavailable.
        args = ({"timeout": 5} if url.startswith("sqlite") else {"connect_timeout": 5} if url.startswith("postgres")
                else {})
        try:
            self.engine = sa.create_engine(url, connect_args=args, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise NotesError(f"bad notes database URL (MICROSCOPE_NOTES): {first_line(exc)}") from None
        if url.startswith("sqlite:///"):
            folder = Path(url[len("sqlite:///"):]).parent
            try:
                if not readonly and not folder.is_dir():
                    folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise NotesUnavailable(f"notes are unavailable: cannot create {folder}: {exc.strerror}") from None

    @classmethod
    def open(cls, url: str | None = None, readonly: bool | None = None) -> Notes:
        """The notes database at `url` (default: `default_url()`), its schema created or migrated."""
        held = cls(url or default_url(), config.notes_readonly() if readonly is None else readonly)
        held.migrate()
        return held

    def close(self) -> None:
        self.engine.dispose()

    # ---- schema ----------------------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create the tables of a new database, or bring an older one to NOTES_VERSION; refuse a newer one."""
        try:
            for attempt in range(2):  # two replicas creating the same new database: the loser retries once
                try:
                    with self.engine.begin() as con:
                        if not sa.inspect(con).has_table("notes_schema"):
                            if self.readonly:
                                raise NotesReadOnly("the notes database has no tables yet and notes are read-only")
                            meta.create_all(con)
                            con.execute(schema_table.insert().values(version=NOTES_VERSION))
                            return NOTES_VERSION
                        version = con.execute(sa.select(schema_table.c.version)).scalar_one()
                        if version > NOTES_VERSION:
                            raise NotesError(f"the notes database is of version {version}; this Microscope knows "
                                             f"{NOTES_VERSION}: upgrade Microscope")
                        while version < NOTES_VERSION:
                            MIGRATIONS[version](con)
                            version += 1
                            con.execute(schema_table.update().values(version=version))
                        return version
                except IntegrityError:
                    if attempt:
                        raise
                except sa.exc.ProgrammingError:  # a table another replica created between our check and ours
                    if attempt:
                        raise
        except NotesError:
            raise
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None
        raise AssertionError("unreachable")

    def version(self) -> int:
        with self._read() as con:
            return con.execute(sa.select(schema_table.c.version)).scalar_one()

    # ---- reading ---------------------------------------------------------------------------------------------

    def _read(self):
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None

    def get(self, model_id: str, layer: str, unit: int) -> UnitNotes:
        try:
            with self._read() as con:
                return self._get(con, model_id, layer, int(unit))
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None

    @staticmethod
    def _where(table, model_id: str, layer: str, unit: int):
        return sa.and_(table.c.model_id == model_id, table.c.layer == layer, table.c.unit == unit)

    def _get(self, con, model_id: str, layer: str, unit: int) -> UnitNotes:
        rev = con.execute(sa.select(revisions).where(self._where(revisions, model_id, layer, unit))).first()
        label = con.execute(sa.select(labels).where(self._where(labels, model_id, layer, unit))).first()
        note = con.execute(sa.select(notes).where(self._where(notes, model_id, layer, unit))).first()
        fams = con.execute(sa.select(families.c.family).where(self._where(families, model_id, layer, unit))
                           .order_by(families.c.family)).scalars().all()
        starred = con.execute(sa.select(stars.c.user_email).where(self._where(stars, model_id, layer, unit))
                              .order_by(stars.c.user_email)).scalars().all()
        return UnitNotes(model_id, layer, unit,
                         label=label.label if label else "", label_by=label.author if label else None,
                         label_at=label.updated_at if label else None,
                         note=note.body if note else "", note_by=note.author if note else None,
                         note_at=note.updated_at if note else None, families=tuple(fams), stars=tuple(starred),
                         revision=rev.revision if rev else 0, updated_by=rev.updated_by if rev else None,
                         updated_at=rev.updated_at if rev else None)

    def history(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """Every change to one unit, newest first."""
        with self._read() as con:
            rows = con.execute(sa.select(history).where(self._where(history, model_id, layer, int(unit)))
                               .order_by(history.c.id.desc())).mappings().all()
        return [dict(r) for r in rows]

    def layer_badges(self, model_id: str, layer: str) -> dict[int, dict]:
        """{unit: {label, families}} for the units of one layer that have either."""
        out: dict[int, dict] = {}
        with self._read() as con:
            for unit, label in con.execute(sa.select(labels.c.unit, labels.c.label).where(
                    labels.c.model_id == model_id, labels.c.layer == layer)):
                out.setdefault(unit, {"label": "", "families": []})["label"] = label
            for unit, family in con.execute(sa.select(families.c.unit, families.c.family).where(
                    families.c.model_id == model_id, families.c.layer == layer).order_by(families.c.family)):
                out.setdefault(unit, {"label": "", "families": []})["families"].append(family)
        return out

    def layer_families(self, model_id: str, layer: str) -> dict[str, list[int]]:
        """{family: its units, ascending} in one layer, families by name."""
        out: dict[str, list[int]] = {}
        with self._read() as con:
            for family, unit in con.execute(sa.select(families.c.family, families.c.unit).where(
                    families.c.model_id == model_id, families.c.layer == layer)
                    .order_by(families.c.family, families.c.unit)):
                out.setdefault(family, []).append(unit)
        return out

    def starred(self, user: str) -> list[dict]:
        """The units one user starred, newest star first: {model_id, layer, unit, label, starred_at}."""
        query = (sa.select(stars.c.model_id, stars.c.layer, stars.c.unit, stars.c.starred_at, labels.c.label)
                 .select_from(stars.outerjoin(labels, sa.and_(labels.c.model_id == stars.c.model_id,
                                                               labels.c.layer == stars.c.layer,
                                                               labels.c.unit == stars.c.unit)))
                 .where(stars.c.user_email == user).order_by(stars.c.starred_at.desc()))
        with self._read() as con:
            return [{**dict(r), "label": r.label or ""} for r in con.execute(query).mappings()]

    def search(self, text: str, limit: int = SEARCH_LIMIT) -> list[dict]:
        """Units whose label, note or family names hold every word of `text` (case-insensitive), in any model:
        {model_id, layer, unit, label, note, families}, by model, layer and unit."""
        words = text.split()
        if not words:
            return []
        fam_names = (sa.select(families.c.model_id, families.c.layer, families.c.unit, families.c.family)
                     .subquery("fam"))
        units = sa.union(sa.select(labels.c.model_id, labels.c.layer, labels.c.unit),
                         sa.select(notes.c.model_id, notes.c.layer, notes.c.unit),
                         sa.select(families.c.model_id, families.c.layer, families.c.unit)).subquery("u")
        conditions = []
        for word in words:
            pattern = _like(word)
            fam_match = sa.exists().where(fam_names.c.model_id == units.c.model_id, fam_names.c.layer == units.c.layer,
                                          fam_names.c.unit == units.c.unit,
                                          sa.func.lower(fam_names.c.family).like(pattern, escape="\\"))
            conditions.append(sa.or_(sa.func.lower(sa.func.coalesce(labels.c.label, "")).like(pattern, escape="\\"),
                                     sa.func.lower(sa.func.coalesce(notes.c.body, "")).like(pattern, escape="\\"),
                                     fam_match))

        def joined(table):
            return sa.and_(table.c.model_id == units.c.model_id, table.c.layer == units.c.layer,
                           table.c.unit == units.c.unit)

        query = (sa.select(units.c.model_id, units.c.layer, units.c.unit, labels.c.label, notes.c.body)
                 .select_from(units.outerjoin(labels, joined(labels)).outerjoin(notes, joined(notes)))
                 .where(*conditions).order_by(units.c.model_id, units.c.layer, units.c.unit).limit(limit))
        with self._read() as con:
            found = con.execute(query).all()
            out = []
            for r in found:
                fams = con.execute(sa.select(families.c.family).where(
                    self._where(families, r.model_id, r.layer, r.unit)).order_by(families.c.family)).scalars().all()
                out.append({"model_id": r.model_id, "layer": r.layer, "unit": r.unit, "label": r.label or "",
                            "note": r.body or "", "families": list(fams)})
        return out

    def annotated(self) -> list[tuple[str, str, int]]:
        """Every unit that anything is written about (label, note, family or star)."""
        parts = [sa.select(t.c.model_id, t.c.layer, t.c.unit) for t in (labels, notes, families, stars)]
        with self._read() as con:
            rows = con.execute(sa.union(*parts)).all()
        return sorted(tuple(r) for r in rows)  # in Python: the same order whatever the database's collation

    def orphans(self, store) -> list[dict]:
        """Annotated units the store does not hold (its model, its layer or the unit number is gone): kept in
        the database, listed here so that someone can move or delete them."""
        out = []
        for model_id, layer, unit in self.annotated():
            if store.model(model_id) is None:
                why = "model not in the store"
            elif (row := store.layer(model_id, layer)) is None:
                why = "layer not in the store"
            elif not 0 <= unit < row["units"]:
                why = f"the layer has units 0 to {row['units'] - 1}"
            else:
                continue
            out.append({**asdict(self.get(model_id, layer, unit)), "why": why})
        return out

    # ---- writing ---------------------------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise NotesReadOnly("notes are read-only here (MICROSCOPE_NOTES_READONLY)")

    def save(self, model_id: str, layer: str, unit: int, *, label: str, note: str, families: list[str] | tuple,
             author: str, seen: int) -> UnitNotes:
        """Set a unit's label, families and note as one edit made on revision `seen`. Unchanged fields are left
        alone (no history row); a save that changes nothing writes nothing. Raises StaleEdit when the unit's
        revision is no longer `seen`, NotesError for a value over its limit."""
        self._writable()
        unit = int(unit)
        yours = {"label": check_label(label), "note": check_note(note), "families": check_families(families),
                 "seen": int(seen)}
        try:
            with self.engine.begin() as con:
                current = self._get(con, model_id, layer, unit)
                if current.revision != yours["seen"]:
                    raise StaleEdit(current, yours)
                if (current.label, current.note, current.families) == (yours["label"], yours["note"],
                                                                       yours["families"]):
                    return current
                at = now()
                self._bump(con, model_id, layer, unit, yours["seen"], author, at, current, yours)
                self._write(con, current, yours, author, at)
        except IntegrityError:
            # Another first save of the same unit committed between our read and our insert.
            raise StaleEdit(self.get(model_id, layer, unit), yours) from None
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None
        return self.get(model_id, layer, unit)

    def _bump(self, con, model_id, layer, unit, seen, author, at, current, yours) -> None:
        """Take the revision from `seen` to seen + 1, or fail with StaleEdit: the one atomic step of a save."""
        if seen == 0:
            con.execute(revisions.insert().values(model_id=model_id, layer=layer, unit=unit, revision=1,
                                                  updated_by=author, updated_at=at))
            return
        done = con.execute(revisions.update().where(self._where(revisions, model_id, layer, unit),
                                                    revisions.c.revision == seen)
                           .values(revision=seen + 1, updated_by=author, updated_at=at))
        if done.rowcount != 1:
            raise StaleEdit(self._get(con, model_id, layer, unit), yours)

    def _write(self, con, current: UnitNotes, new: dict, author: str, at: str) -> None:
        key = {"model_id": current.model_id, "layer": current.layer, "unit": current.unit}
        changes = []
        for name, table, column in (("label", labels, "label"), ("note", notes, "body")):
            old, value = getattr(current, name), new[name]
            if old == value:
                continue
            changes.append((name, old, value))
            con.execute(table.delete().where(self._where(table, **key)))
            if value:
                con.execute(table.insert().values(**key, **{column: value}, author=author, updated_at=at))
        if current.families != new["families"]:
            changes.append(("families", "; ".join(current.families), "; ".join(new["families"])))
            gone = set(current.families) - set(new["families"])
            if gone:
                con.execute(families.delete().where(self._where(families, **key), families.c.family.in_(gone)))
            for name in sorted(set(new["families"]) - set(current.families)):
                con.execute(families.insert().values(**key, family=name, author=author, added_at=at))
        for name, old, value in changes:
            con.execute(history.insert().values(**key, field=name, old_value=old or None, new_value=value or None,
                                                author=author, at=at))

    def star(self, model_id: str, layer: str, unit: int, user: str, on: bool = True) -> bool:
        """Star (or unstar) a unit for one user; True where that changed anything. Stars are per user, so no
        revision is involved; each change is a history row."""
        self._writable()
        key = {"model_id": model_id, "layer": layer, "unit": int(unit)}
        try:
            with self.engine.begin() as con:
                mine = sa.and_(self._where(stars, **key), stars.c.user_email == user)
                has = con.execute(sa.select(sa.func.count()).select_from(stars).where(mine)).scalar_one() > 0
                if has == on:
                    return False
                at = now()
                if on:
                    con.execute(stars.insert().values(**key, user_email=user, starred_at=at))
                else:
                    con.execute(stars.delete().where(mine))
                con.execute(history.insert().values(**key, field="star", old_value=None if on else user,
                                                    new_value=user if on else None, author=user, at=at))
        except IntegrityError:
            return False  # the same user starred it from another tab a moment ago
        except SQLAlchemyError as exc:
            raise _unavailable(exc) from None
        return True


@dataclass
class ImportRow:
    """One unit of an export file: its values replace what is written about the unit."""

    model_id: str
    layer: str
    unit: int
    label: str = ""
    note: str = ""
    families: tuple[str, ...] = ()
    stars: tuple[str, ...] = field(default_factory=tuple)
