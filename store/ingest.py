"""Builds a store file from the shards in a work folder, then atomically replaces the published one.

The new file is written next to the published one under a temporary name; only a complete, checkpointed
file is renamed over it. Readers that hold the old file open keep reading it; new readers see the new one.
Where two shards hold rows for the same unit and technique (a rerun with other params), the newest wins.

Everything is read with DuckDB's own readers: the model records and each shard's meta.json with `read_json`,
the shards' tables with `read_parquet`, the dataset images with `read_blob`; rows go in `BY NAME`. Last, the
tables that relate units across the whole store are derived from what the shards brought (store/similarity.py).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import duckdb
from tqdm import tqdm

from store import SCHEMA_VERSION, StoreError, similarity
from store.errors import one_line
from store.shards import download, finished_shards
from store.workdir import is_url

# Tables that shards fill are those with a run_id column. A newer run replaces an older one's rows for the
# same (model_id, layer[, unit][, technique]): these columns, where a table has them, form the key.
REPLACE_KEY = ("model_id", "layer", "unit", "technique")

# The fields of a model record (precompute's ModelSpec.to_json, at store.shards.model_rel) that the store keeps.
# Declared rather than inferred: a field that is empty in every record would otherwise have no type.
MODEL_RECORD = {
    "id": "VARCHAR", "arch": "VARCHAR", "source": "VARCHAR", "hub_id": "VARCHAR", "revision": "VARCHAR",
    "location": "VARCHAR", "input_size": "INTEGER", "mean": "DOUBLE[]", "std": "DOUBLE[]", "labels": "VARCHAR",
    "description": "VARCHAR",
    "layers": "STRUCT(name VARCHAR, alias VARCHAR, units INTEGER, height INTEGER, width INTEGER, rf_px INTEGER)[]",
}
# The fields of a shard's meta.json (precompute.jobs.write_shard). Techniques that read no dataset leave
# dataset and images_* out; `params` stays JSON text, not a struct that would merge every shard's keys.
SHARD_META = {
    "key": "VARCHAR", "model_id": "VARCHAR", "layer": "VARCHAR", "technique": "VARCHAR", "unit_start": "INTEGER",
    "unit_stop": "INTEGER", "params": "JSON", "seed": "BIGINT", "dataset": "VARCHAR", "images_seen": "BIGINT",
    "images_skipped": "BIGINT", "device": "VARCHAR", "finished_at": "DOUBLE", "seconds": "DOUBLE",
}
# finished_at is Unix seconds; stored as a naive UTC TIMESTAMP rounded to the microsecond half to even, as
# Python's datetime.fromtimestamp rounds (to_timestamp would go through the session's time zone).
FINISHED_AT = ("make_timestamp(CAST(floor(finished_at) AS BIGINT) * 1000000"
               " + CAST(round_even((finished_at - floor(finished_at)) * 1e6, 0) AS BIGINT))")
# The JSON files in $files, one record each, with the fields in $columns. Hive partitioning is off (here and for
# read_parquet): a `k=v` folder in the work folder's path must not become a column.
READ_JSON = "read_json($files, columns = $columns, hive_partitioning = false, filename = true)"
IMAGE_BATCH = 500  # image files per read_blob, so that the progress bar moves


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
            return _ingest_folder(Path(local), store, progress, built_from=work)
    return _ingest_folder(work, store, progress, built_from=str(Path(work).resolve()))


def _ingest_folder(work: Path, store: Path, progress: bool, built_from: str) -> dict:

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
                counts = _build(con, work, models, shards, progress, built_from)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, store)
        except (OSError, duckdb.Error, StoreError) as exc:
            raise StoreError(f"ingest failed, {store} left as it was: {one_line(exc)}") from exc
        finally:
            _remove(tmp)
    return counts


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)


def _build(con, work: Path, models: list[Path], shards: list[Path], progress: bool, built_from: str) -> dict:
    con.execute(schema_sql())
    # `work` names the work folder the store was built from (`microscope info`): its shards are what a rebuild reads.
    con.execute("INSERT INTO meta VALUES ('schema_version', $version), ('built_at', $built_at), ('work', $work)",
                {"version": SCHEMA_VERSION, "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "work": built_from})
    _ingest_models(con, models)
    artefact_tables = {t: _columns(con, t) for t in _tables(con) if "run_id" in _columns(con, t) and t != "runs"}
    if shards:
        _ingest_runs(con, shards)
    parquet = {table: [str(s / f"{table}.parquet") for s in shards if (s / f"{table}.parquet").is_file()]
               for table in (*artefact_tables, "images")}
    for table, table_columns in tqdm(artefact_tables.items(), desc="loading shards", unit="table",
                                     disable=not progress):
        if parquet[table]:
            _ingest_artefacts(con, table, table_columns, parquet[table])
    used = " UNION ".join(f"SELECT run_id FROM {t}" for t in artefact_tables)
    con.execute(f"DELETE FROM runs WHERE run_id NOT IN ({used})")
    _ingest_images(con, work, parquet["images"], progress)
    similarity.derive(con, progress=progress)
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("models", "layers", "runs", *artefact_tables, "images", *similarity.DERIVED)}


def _ingest_models(con, models: list[Path]) -> None:
    """Each model record gives a `models` row and its `layers` rows, in network order. An empty string in
    the record means "none" and is stored as NULL."""
    source = {"files": [str(p) for p in models], "columns": MODEL_RECORD}
    con.execute(f"""
        INSERT INTO models BY NAME
        SELECT id AS model_id, arch, source, nullif(hub_id, '') AS hub_id, nullif(revision, '') AS revision,
               nullif(location, '') AS location, input_size, mean, std, nullif(labels, '') AS labels, description
        FROM {READ_JSON} ORDER BY filename
    """, source)
    con.execute(f"""
        INSERT INTO layers BY NAME
        SELECT model_id, layer.name AS layer, position, nullif(layer.alias, '') AS alias, layer.units AS units,
               layer.height AS height, layer.width AS width, layer.rf_px AS rf_px
        FROM (SELECT id AS model_id, filename, unnest(layers) AS layer, generate_subscripts(layers, 1) - 1 AS position
              FROM {READ_JSON})
        ORDER BY filename, position
    """, source)


def _ingest_runs(con, shards: list[Path]) -> None:
    """One `runs` row per shard, from its meta.json: the provenance of its rows."""
    con.execute(f"""
        INSERT INTO runs BY NAME
        SELECT key AS run_id, model_id, layer, technique, unit_start, unit_stop, params, seed, dataset,
               images_seen, images_skipped, device, {FINISHED_AT} AS finished_at, seconds
        FROM {READ_JSON} ORDER BY filename
    """, {"files": [str(s / "meta.json") for s in shards], "columns": SHARD_META})


def _ingest_artefacts(con, table: str, table_columns: list[str], paths: list[str]) -> None:
    """A table's rows from every shard that has it, keeping for each key only the rows of its newest run. Only
    the table's columns are read: a shard written when a table had one more column still loads."""
    source = "read_parquet($files, union_by_name = true, hive_partitioning = false)"
    in_files = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}", {"files": paths}).fetchall()}
    columns = ", ".join(f"s.{c}" for c in table_columns if c in in_files)
    key = ", ".join(f"s.{k}" for k in REPLACE_KEY if k in table_columns)
    con.execute(f"""
        INSERT INTO {table} BY NAME
        SELECT {columns} FROM {source} s
        JOIN runs r USING (run_id)
        QUALIFY r.finished_at = max(r.finished_at) OVER (PARTITION BY {key})
    """, {"files": paths})


def _tables(con) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name").fetchall()]


def _columns(con, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]


def _ingest_images(con, work: Path, listings: list[str], progress: bool) -> None:
    """Dataset images referenced by stored examples: the dataset shards' listings (images.parquet) say where
    each image's file lies in the work folder; its bytes are stored as they are (WebP)."""
    if not listings:
        return
    con.execute("""
        CREATE TEMP TABLE wanted AS
        SELECT DISTINCT ON (image_id) image_id, dataset, source, $work || '/' || path AS file
        FROM read_parquet($files, union_by_name = true, hive_partitioning = false)
        WHERE image_id IN (SELECT image_id FROM dataset_examples)
        ORDER BY image_id, file
    """, {"files": listings, "work": str(work)})
    wanted = [row[0] for row in con.execute("SELECT file FROM wanted ORDER BY image_id").fetchall()]
    with tqdm(total=len(wanted), desc="storing images", unit="img", disable=not progress) as bar:
        for start in range(0, len(wanted), IMAGE_BATCH):
            batch = wanted[start:start + IMAGE_BATCH]
            (stored,) = con.execute("""
                INSERT INTO images BY NAME
                SELECT w.image_id, w.dataset, w.source, 'webp' AS format, b.content AS data
                FROM read_blob($files) b JOIN wanted w ON w.file = b.filename
                ORDER BY w.image_id
            """, {"files": batch}).fetchone()
            if stored < len(batch):  # read_blob passes over a file that is not there
                missing = [f for f in batch if not os.path.isfile(f)] or batch
                raise StoreError(f"image file missing from the work folder: {missing[0]}")
            bar.update(len(batch))
    con.execute("DROP TABLE wanted")
