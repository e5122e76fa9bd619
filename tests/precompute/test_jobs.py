import json

import pyarrow as pa
import pytest

from precompute import jobs
from precompute.jobs import Job, plan, unit_ranges, write_shard
from store.shards import finished_shards, slug


def test_unit_ranges_merge_contiguous_runs():
    assert unit_ranges([5, 0, 1, 2, 2, 7, 6]) == [(0, 3), (5, 8)]
    assert unit_ranges([]) == []


def test_plan_cuts_ranges_into_chunks(monkeypatch):
    monkeypatch.setattr(jobs, "UNIT_CHUNK", 4)
    planned = plan("m", {"a": list(range(10)), "b": [3]}, ["stats", "dataset"], {"stats": {"x": 1}, "dataset": {}})
    spans = sorted((j.layer, j.technique, j.unit_start, j.unit_stop) for j in planned)
    assert ("a", "stats", 0, 4) in spans and ("a", "stats", 8, 10) in spans and ("b", "dataset", 3, 4) in spans
    assert len(planned) == 2 * 3 + 2


def test_key_is_stable_and_depends_on_every_field():
    job = Job("m", "l", "stats", 0, 8, jobs.canonical({"seed": 0, "k": 16}))
    same = Job("m", "l", "stats", 0, 8, jobs.canonical({"k": 16, "seed": 0}))
    assert job.key == same.key
    for other in (Job("m", "l", "stats", 0, 9, job.params), Job("m", "l2", "stats", 0, 8, job.params),
                  Job("m", "l", "stats", 0, 8, jobs.canonical({"seed": 1, "k": 16}))):
        assert other.key != job.key


def test_shard_is_written_whole_and_found(tmp_path):
    job = Job("model/with:odd chars", "blocks.1", "stats", 0, 4, "{}")
    assert not job.done(tmp_path)
    write_shard(tmp_path, job, {"unit_stats": pa.table({"unit": [0, 1, 2, 3]})}, {"seed": 3})
    assert job.done(tmp_path)
    shard = job.shard_dir(tmp_path)
    assert finished_shards(tmp_path) == [shard]
    assert json.loads((shard / "meta.json").read_text())["seed"] == 3
    assert not [p for p in shard.parent.iterdir() if ".tmp-" in p.name]


def test_failed_shard_leaves_nothing(tmp_path):
    job = Job("m", "l", "stats", 0, 1, "{}")
    with pytest.raises(Exception):
        write_shard(tmp_path, job, {"bad": "not a table"}, {})
    assert not job.done(tmp_path)
    assert finished_shards(tmp_path) == []
    assert list(job.shard_dir(tmp_path).parent.iterdir()) == []


def test_slug_is_safe_and_distinct():
    a, b = slug("local-dir:/a/b"), slug("local-dir:/a_b")
    assert a != b and "/" not in a and ":" not in a
