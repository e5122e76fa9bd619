"""Builds a store file from the shards in a work folder, then atomically replaces the published one.

The new file is written next to the published one under a temporary name; only a complete, checkpointed
file is renamed over it. Readers that hold the old file open keep reading it; new readers see the new one.
Where two shards hold rows for the same unit and technique (a rerun with other params), the newest wins.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import duckdb
import pyarrow as pa
from tqdm import tqdm

from store import SCHEMA_VERSION, StoreError
from store.errors import one_line
from store.shards import download, finished_shards
from store.workdir import is_url

# Tables that shards fill are those with a run_id column. A newer run replaces an older one's rows for the
# same (model_id, layer[, unit][, technique]): these columns, where a table has them, form the key.
REPLACE_KEY = ("model_id", "layer", "unit", "technique")


def schema_sql() -> str:
    return files("store").joinpath("schema.sql").read_text()


@contextmanager
def exclusive(store: Path):
    """One writer per store: a second ingest fails at once instead of racing the first."""
    store.parent.mkdir(parents=True, exist_ok=True)
    lock_path = store.with_name(store.name + ".lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"store {store} is locked: another microscope process is writing it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ingest(work: Path | str, store: Path, progress: bool = True) -> dict:
    """Rebuilds `store` from every finished shard under `work` (a folder, or an object-store URL such as
    s3://bucket/prefix); returns row counts per table."""
    if is_url(work):
        # DuckDB cannot read s3:// here without its httpfs extension, which is downloaded at run time (see
        # DESIGN.md): fetch the committed shards into a local folder beside the store, ingest, then drop it.
        store.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{store.name}.work-", dir=store.parent) as local:
            download(work, Path(local), progress)
            return ingest(Path(local), store, progress)

    shards = finished_shards(work)
    models = sorted((work / "models").glob("*.json")) if (work / "models").is_dir() else []
    if not models:
        raise StoreError(f"nothing to ingest: no models under {work / 'models'}; run `microscope precompute` first")
    with exclusive(store):
        tmp = store.with_name(f".{store.name}.tmp-{os.getpid()}")
        _remove(tmp)
        try:
            con = duckdb.connect(str(tmp))
            try:
                counts = _build(con, work, models, shards, progress)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, store)
        except (OSError, duckdb.Error) as exc:
            raise StoreError(f"ingest failed, {store} left as it was: {one_line(exc)}") from exc
        finally:
            _remove(tmp)
    return counts


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def _build(con, work: Path, models: list[Path], shards: list[Path], progress: bool) -> dict:
    con.execute(schema_sql())
    con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('built_at', ?)",
                [SCHEMA_VERSION, datetime.now(timezone.utc).isoformat(timespec="seconds")])
    for path in models:
        spec = json.loads(path.read_text())
        con.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            spec["id"], spec["arch"], spec["source"], spec["hub_id"] or None, spec["revision"] or None,
            spec["location"] or None, spec["input_size"], list(spec["mean"]), list(spec["std"]),
            spec["labels"] or None, spec["description"]])
        con.executemany("INSERT INTO layers VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            [spec["id"], layer["name"], i, layer["alias"] or None, layer["units"], layer["height"], layer["width"],
             layer["rf_px"]] for i, layer in enumerate(spec["layers"])])

    artefact_tables = {t: _columns(con, t) for t in _tables(con) if "run_id" in _columns(con, t) and t != "runs"}
    runs = []
    parquet: dict[str, list[str]] = {table: [] for table in (*artefact_tables, "images")}
    for shard in tqdm(shards, desc="reading shards", unit="shard", disable=not progress):
        meta = json.loads((shard / "meta.json").read_text())
        runs.append([meta["key"], meta["model_id"], meta["layer"], meta["technique"], meta["unit_start"],
                     meta["unit_stop"], json.dumps(meta["params"]), meta.get("seed"), meta.get("dataset"),
                     meta.get("images_seen"), meta.get("images_skipped"), meta.get("device"),
                     datetime.fromtimestamp(meta["finished_at"], timezone.utc).replace(tzinfo=None),
                     meta.get("seconds")])
        for table in parquet:
            if (shard / f"{table}.parquet").is_file():
                parquet[table].append(str(shard / f"{table}.parquet"))
    con.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * 14)})", runs)

    for table, table_columns in artefact_tables.items():
        if not parquet[table]:
            continue
        key = ", ".join(f"s.{k}" for k in REPLACE_KEY if k in table_columns)
        columns = ", ".join(f"s.{c}" for c in table_columns)
        con.execute(f"""
            INSERT INTO {table}
            SELECT {columns} FROM read_parquet(?, union_by_name = true) s JOIN runs r USING (run_id)
            QUALIFY r.finished_at = max(r.finished_at) OVER (PARTITION BY {key})
        """, [parquet[table]])
    used = " UNION ".join(f"SELECT run_id FROM {t}" for t in artefact_tables)
    con.execute(f"DELETE FROM runs WHERE run_id NOT IN ({used})")
    _ingest_images(con, work, parquet["images"], progress)
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("models", "layers", "runs", *artefact_tables, "images")}


def _tables(con) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name").fetchall()]


def _columns(con, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]


def _ingest_images(con, work: Path, listings: list[str], progress: bool) -> None:
    """Dataset images referenced by stored examples, read from the work folder's image files."""
    if not listings:
        return
    wanted = con.execute("""
        SELECT DISTINCT l.image_id, l.dataset, l.source, l.path
        FROM read_parquet(?, union_by_name = true) l
        WHERE l.image_id IN (SELECT image_id FROM dataset_examples)
        ORDER BY l.image_id
    """, [listings]).fetchall()
    batch: list[tuple] = []

    def flush():
        if batch:
            table = pa.table({"image_id": [b[0] for b in batch], "dataset": [b[1] for b in batch],
                              "source": [b[2] for b in batch], "format": ["webp"] * len(batch),
                              "data": pa.array([b[3] for b in batch], type=pa.binary())})
            con.register("batch_table", table)
            con.execute("INSERT INTO images SELECT * FROM batch_table")
            con.unregister("batch_table")
            batch.clear()

    seen = set()
    for image_id, dataset, source, rel in tqdm(wanted, desc="storing images", unit="img", disable=not progress):
        if image_id in seen:
            continue
        seen.add(image_id)
        path = work / rel
        try:
            batch.append((image_id, dataset, source, path.read_bytes()))
        except OSError as exc:
            raise StoreError(f"image file missing from the work folder: {path} ({exc.strerror})") from exc
        if len(batch) >= 500:
            flush()
    flush()

