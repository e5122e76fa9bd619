"""Jobs: (model, layer, technique, unit range, params hash), each a pure function of its key.

Each finished job leaves one shard in the work folder (the format is the store's: `store.shards`), named by
its key; a job whose shard exists is done. So an interrupted run resumes, a rerun is free, and nothing is
written twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

import pyarrow as pa

from store import shards, workdir
from store.workdir import Location

UNIT_CHUNK = 512  # units per job: small enough to parallelise across workers, large enough to batch


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
        return shards.shard_rel(self.model_id, self.technique, self.layer, self.unit_start, self.unit_stop,
                                self.key)

    def shard_dir(self, work: Location) -> Location:
        return workdir.join(work, self.shard_rel)

    def done(self, work: Location) -> bool:
        return shards.is_finished(work, self.shard_rel)

    def label(self) -> str:
        return f"{self.model_id}@{self.layer}:{self.unit_start}-{self.unit_stop - 1} {self.technique}"

    def failure(self, error: str) -> dict:
        """How an executor reports this job failed: `error` is one line."""
        return {"key": self.key, "label": self.label(), "layer": self.layer, "technique": self.technique,
                "error": error}


def canonical(params: dict) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def plan(model_id: str, units_by_layer: dict[str, list[int]], techniques: list[str],
         params: dict[str, dict]) -> list[Job]:
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
    """One shard for the job: its tables, and its key, params and `meta` (seed, device, timings) as provenance."""
    record = {**asdict(job), "key": job.key, "params": json.loads(job.params), "finished_at": time.time(), **meta}
    return shards.write(work, job.shard_rel, tables, record)
