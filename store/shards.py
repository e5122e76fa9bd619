"""The shard format: how finished work lies in a work folder before `ingest` turns it into a store.

A shard is one job's output: a folder named by the job's key holding one Parquet file per store table it
fills (`<table>.parquet`, columns as in `store/schema.sql`) and a `meta.json` (the job key, params, seed,
device, timings: the provenance that becomes a `runs` row). Its folder is written under a temporary name
and renamed into place whole; on an object store, which has no rename, `meta.json` is written last and is
the commit marker. Either way a shard with a `meta.json` is finished, and only finished shards are read.

Work folder layout:
    <work>/models/<model slug>.json             the model's spec, layer geometry (rewritten each run)
    <work>/shards/<model slug>/<technique>/<layer slug>/<start>-<stop>-<key>/
        meta.json                               the job key, params, seed, device, timings (provenance)
        <table>.parquet                         the technique's rows for one table of the store
    <work>/images/<dataset key>/<index>.webp    dataset images referenced by rows, written once each
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from store import workdir
from store.workdir import Location


def slug(text: str) -> str:
    """A file-name-safe, collision-free rendering of an id (readable prefix, short hash)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "x"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def shard_rel(model_id: str, technique: str, layer: str, unit_start: int, unit_stop: int, key: str) -> str:
    """A job's shard folder, relative to the work folder."""
    return f"shards/{slug(model_id)}/{technique}/{slug(layer)}/{unit_start:05d}-{unit_stop:05d}-{key}"


def model_rel(model_id: str) -> str:
    """The model record (spec and layer geometry), relative to the work folder."""
    return f"models/{slug(model_id)}.json"


def images_rel(dataset_key: str) -> str:
    """The folder of one dataset's images (at one input size), relative to the work folder."""
    return f"images/{dataset_key}"


def image_rel(dataset_key: str, index: int) -> str:
    """One dataset image, written once and named by the rows that show it, relative to the work folder."""
    return f"{images_rel(dataset_key)}/{index:07d}.webp"


def is_finished(work: Location, rel: str) -> bool:
    if isinstance(work, Path):
        return (work / rel / "meta.json").is_file()
    return workdir.exists(work, f"{rel}/meta.json")


def write(work: Location, rel: str, tables: dict[str, pa.Table], record: dict) -> Location:
    """Writes one shard whole: the tables as Parquet files, then `record` as its meta.json. A shard already
    finished under `rel` (an identical job that won a race) is left as it is."""
    if not isinstance(work, Path):
        return _write_remote(work, rel, tables, record)
    final = work / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet")
        (tmp / "meta.json").write_text(json.dumps(record, indent=1))
        _fsync_tree(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_finished(work, rel):  # not a lost race with an identical job: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_remote(work: str, rel: str, tables: dict[str, pa.Table], record: dict) -> str:
    """An object store has no rename, so meta.json is the commit marker: the Parquet files are written under
    the final prefix first, then meta.json last, and a shard counts as finished only once its meta.json
    exists. Each PUT is whole and S3 reads after writes are strongly consistent, so a visible meta.json means
    every file before it is complete. A job killed halfway leaves Parquet files without a marker: invisible,
    and overwritten under the same names when the job runs again. (A temporary prefix then a copy would cost
    a second transfer of every file and the copy would not be atomic either, so it would still need a
    marker: no safer, twice the traffic.)"""
    if is_finished(work, rel):  # an identical job (a retry that outlived its timeout) committed it already
        return workdir.join(work, rel)
    for name, table in tables.items():
        buffer = BytesIO()
        pq.write_table(table, buffer)
        workdir.write_bytes(work, f"{rel}/{name}.parquet", buffer.getvalue())
    workdir.write_bytes(work, f"{rel}/meta.json", json.dumps(record, indent=1).encode())
    return workdir.join(work, rel)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def finished_shards(work: Location) -> list[Location]:
    """Every finished shard folder (temporary folders of interrupted jobs, and unmarked remote ones, are not)."""
    if not isinstance(work, Path):
        fs, base = workdir.filesystem(work)
        found = fs.glob(f"{base}/shards/*/*/*/*/meta.json")
        return sorted(f"{work}/{p[len(base) + 1:].rsplit('/', 1)[0]}" for p in found)
    root = work / "shards"
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/*/*/*/meta.json") if not p.parent.name.startswith("."))


def download(url: str, local: Path, progress: bool = True) -> None:
    """Copies what ingest reads from an object-store work folder into a local one: the model records, the
    committed shards (those with a meta.json; files of unfinished jobs stay behind) and the dataset images."""
    fs, root = workdir.filesystem(url)
    committed = tuple(f"{shard[len(url) + 1:]}/" for shard in finished_shards(url))
    wanted = []
    for top in ("models", "shards", "images"):
        for path in fs.find(f"{root}/{top}"):
            rel = path[len(root) + 1:]
            if top != "shards" or rel.startswith(committed):
                wanted.append(rel)
    bar = tqdm(total=len(wanted), desc=f"fetching {url}", unit="file", disable=not progress)
    for start in range(0, len(wanted), 256):  # fsspec fetches a list of files concurrently
        batch = wanted[start:start + 256]
        fetched = fs.cat([f"{root}/{rel}" for rel in batch], on_error="raise")
        for rel in batch:
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fetched[f"{root}/{rel}"])
        bar.update(len(batch))
    bar.close()
