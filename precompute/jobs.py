"""Jobs and shards.

A job is (model, layer, technique, unit range, params hash) and a pure function of that key. Each finished
job leaves one shard folder in the work folder, named by its key, written under a temporary name and
renamed into place whole; a job whose shard exists is done. So an interrupted run resumes, a rerun is
free, and nothing is written twice. The work folder may also be an object-store URL (`s3://...`, see
`precompute.workdir`), where a shard is committed by its meta.json instead of a rename (see write_shard).

Work folder layout:
    <work>/models/<model slug>.json             the model's spec, layer geometry (rewritten each run)
    <work>/shards/<model slug>/<technique>/<layer>/<start>-<stop>-<hash>/
        meta.json                               the job key, params, seed, device, timings (provenance)
        *.parquet                               the technique's rows
    <work>/images/<dataset key>/<index>.webp    dataset images referenced by rows, written once each
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from precompute import workdir
from precompute.workdir import Location

UNIT_CHUNK = 512  # units per job: small enough to parallelise across workers, large enough to batch


def slug(text: str) -> str:
    """A file-name-safe, collision-free rendering of an id (readable prefix, short hash)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "x"
    return f"{readable}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Job:
    model_id: str
    layer: str
    technique: str
    unit_start: int
    unit_stop: int  # exclusive
    params: str  # canonical JSON: everything else that determines the result

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def shard_rel(self) -> str:
        """The shard folder relative to the work folder."""
        return (f"shards/{slug(self.model_id)}/{self.technique}/{slug(self.layer)}/"
                f"{self.unit_start:05d}-{self.unit_stop:05d}-{self.key}")

    def shard_dir(self, work: Location) -> Location:
        return workdir.join(work, self.shard_rel)

    def done(self, work: Location) -> bool:
        if isinstance(work, Path):
            return (self.shard_dir(work) / "meta.json").is_file()
        return workdir.exists(work, f"{self.shard_rel}/meta.json")

    def label(self) -> str:
        return f"{self.model_id}@{self.layer}:{self.unit_start}-{self.unit_stop - 1} {self.technique}"


def canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def plan(model_id: str, units_by_layer: dict[str, list[int]], techniques: list[str], params: dict[str, dict]) -> list[Job]:
    """Jobs covering the requested units: contiguous runs of units, cut into chunks of UNIT_CHUNK."""
    jobs = []
    for layer, units in units_by_layer.items():
        for start, stop in unit_ranges(units):
            for technique in techniques:
                for chunk in range(start, stop, UNIT_CHUNK):
                    jobs.append(Job(model_id, layer, technique, chunk, min(stop, chunk + UNIT_CHUNK),
                                    canonical(params[technique])))
    return jobs


def unit_ranges(units: list[int]) -> list[tuple[int, int]]:
    """Sorted unique units as half-open contiguous ranges: [0,1,2,5] -> [(0,3), (5,6)]."""
    ranges: list[list[int]] = []
    for unit in sorted(set(units)):
        if ranges and ranges[-1][1] == unit:
            ranges[-1][1] = unit + 1
        else:
            ranges.append([unit, unit + 1])
    return [tuple(r) for r in ranges]


def write_shard(work: Location, job: Job, tables: dict[str, pa.Table], meta: dict) -> Location:
    """Writes the shard under a temporary name in the same folder, then renames it into place."""
    if not isinstance(work, Path):
        return _write_remote_shard(work, job, tables, meta)
    final = job.shard_dir(work)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for name, table in tables.items():
            pq.write_table(table, tmp / f"{name}.parquet")
        record = _meta_record(job, meta)
        (tmp / "meta.json").write_text(json.dumps(record, indent=1))
        _fsync_tree(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not job.done(work):  # not a lost race with an identical job: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _meta_record(job: Job, meta: dict) -> dict:
    return {**asdict(job), "key": job.key, "params": json.loads(job.params), "finished_at": time.time(), **meta}


def _write_remote_shard(work: str, job: Job, tables: dict[str, pa.Table], meta: dict) -> str:
    """An object store has no rename, so meta.json is the commit marker: the Parquet files are written under
    the final prefix first, then meta.json last, and a shard counts as finished (done(), finished_shards(),
    ingest) only once its meta.json exists. Each PUT is whole and S3 reads after writes are strongly
    consistent, so a visible meta.json means every file before it is complete. A job killed halfway leaves
    Parquet files without a marker: invisible, and overwritten under the same names when the job runs again.
    (A temporary prefix then a copy would cost a second transfer of every file and the copy would not be
    atomic either, so it would still need a marker: no safer, twice the traffic.)"""
    from io import BytesIO

    if job.done(work):  # an identical job (a retry that outlived its timeout) committed it already
        return job.shard_dir(work)
    for name, table in tables.items():
        buffer = BytesIO()
        pq.write_table(table, buffer)
        workdir.write_bytes(work, f"{job.shard_rel}/{name}.parquet", buffer.getvalue())
    record = _meta_record(job, meta)
    workdir.write_bytes(work, f"{job.shard_rel}/meta.json", json.dumps(record, indent=1).encode())
    return job.shard_dir(work)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes) -> None:
    """Writes a file whole: a temporary name, then a rename over any file of the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def finished_shards(work: Location) -> list[Location]:
    """Every complete shard folder (temporary folders of interrupted jobs are ignored)."""
    if not isinstance(work, Path):
        fs, base = workdir.filesystem(work)
        found = fs.glob(f"{base}/shards/*/*/*/*/meta.json")
        return sorted(f"{work}/{p[len(base) + 1:].rsplit('/', 1)[0]}" for p in found)
    root = work / "shards"
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/*/*/*/meta.json") if not p.parent.name.startswith("."))
