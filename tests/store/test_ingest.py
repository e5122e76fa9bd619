"""Ingest's replace rule on hand-made shards: for each (model, layer, unit[, technique]) the rows of the newest
run (finished_at) win; an older run keeps the rows no newer run covers, and a run left with none is dropped."""

import json
from datetime import datetime, timezone

import duckdb
import pyarrow as pa
import pytest

from store import StoreError, shards
from store.errors import one_line
from store.ingest import ingest
from store.queries import Store

MODEL = "hand"
LAYER = "conv"
STAT_COLUMNS = ("mean", "std", "min", "max", "p50", "p90", "p99", "frac_positive")


def stats_rows(units: range, mean: float, run_id: str) -> pa.Table:
    n = len(units)
    columns = {"model_id": [MODEL] * n, "layer": [LAYER] * n, "unit": list(units), "run_id": [run_id] * n,
               "images": [10] * n, **{c: [mean] * n for c in STAT_COLUMNS}, "dead": [False] * n,
               "hist_lo": [0.0] * n, "hist_hi": [1.0] * n, "hist_counts": [[1, 2]] * n}
    return pa.table(columns)


def thumbnail_rows(entries: list[tuple[int, str, bytes]], run_id: str) -> pa.Table:
    n = len(entries)
    return pa.table({"model_id": [MODEL] * n, "layer": [LAYER] * n, "unit": [u for u, _, _ in entries],
                     "technique": [t for _, t, _ in entries], "format": ["webp"] * n,
                     "data": pa.array([d for _, _, d in entries], type=pa.binary()), "run_id": [run_id] * n})


def write_shard(work, key: str, units: range, finished_at: float, tables: dict[str, pa.Table]) -> None:
    record = {"model_id": MODEL, "layer": LAYER, "technique": "stats", "unit_start": units.start,
              "unit_stop": units.stop, "params": {"version": key}, "key": key, "finished_at": finished_at,
              "seed": 0, "dataset": "sample", "images_seen": 10, "images_skipped": 0, "device": "cpu", "seconds": 1.0}
    shards.write(work, shards.shard_rel(MODEL, "stats", LAYER, units.start, units.stop, key), tables, record)


def write_model_record(work) -> None:
    """The model record as precompute writes it (ModelSpec.to_json with each layer's geometry)."""
    record = {"id": MODEL, "arch": "hand", "source": "factory", "input_size": 8, "mean": [0.5] * 3, "std": [0.5] * 3,
              "layers": [{"name": LAYER, "units": 8, "alias": "c", "height": 4, "width": 4, "rf_px": 3}],
              "hub_id": "", "revision": "", "location": "", "labels": "", "description": ""}
    (work / "models").mkdir(parents=True)
    (work / shards.model_rel(MODEL)).write_text(json.dumps(record))


@pytest.fixture
def store(tmp_path):
    work = tmp_path / "work"
    write_model_record(work)
    # "old" covers units 0-3; "new", finished later, units 2-5; "oldest" units 4-5, all of them covered by "new".
    write_shard(work, "old", range(0, 4), 1000.0, {
        "unit_stats": stats_rows(range(0, 4), 1.0, "old"),
        "thumbnails": thumbnail_rows([(0, "dataset", b"old"), (2, "dataset", b"old"), (2, "featurevis", b"old-fv")],
                                     "old")})
    write_shard(work, "new", range(2, 6), 2000.5, {
        "unit_stats": stats_rows(range(2, 6), 2.0, "new"),
        "thumbnails": thumbnail_rows([(2, "dataset", b"new")], "new")})
    write_shard(work, "oldest", range(4, 6), 500.0, {"unit_stats": stats_rows(range(4, 6), 0.5, "oldest")})
    path = tmp_path / "s.duckdb"
    ingest(work, path, progress=False)
    return path


def test_the_newest_run_of_a_unit_replaces_older_rows(store):
    con = duckdb.connect(str(store), read_only=True)
    try:
        stats = con.execute("SELECT unit, mean, run_id FROM unit_stats ORDER BY unit").fetchall()
        thumbs = con.execute("SELECT unit, technique, data, run_id FROM thumbnails ORDER BY unit, technique").fetchall()
        runs = con.execute("SELECT run_id, params, finished_at FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()
    assert stats == [(0, 1.0, "old"), (1, 1.0, "old"), (2, 2.0, "new"), (3, 2.0, "new"), (4, 2.0, "new"),
                     (5, 2.0, "new")]
    # Thumbnails are keyed by technique too: the newer run's dataset picture of unit 2 leaves its featurevis one.
    assert thumbs == [(0, "dataset", b"old", "old"), (2, "dataset", b"new", "new"), (2, "featurevis", b"old-fv", "old")]
    # "oldest" has no rows left, so it is no run of anything stored; the others keep their own provenance.
    assert [(r, json.loads(p)) for r, p, _ in runs] == [("new", {"version": "new"}), ("old", {"version": "old"})]
    assert runs[0][2] == datetime.fromtimestamp(2000.5, timezone.utc).replace(tzinfo=None)


def test_provenance_names_the_runs_whose_rows_are_stored(store):
    reader = Store(store)
    try:
        assert [r["run_id"] for r in reader.unit_runs(MODEL, LAYER, 0)] == ["old"]
        assert [r["run_id"] for r in reader.unit_runs(MODEL, LAYER, 5)] == ["new"]
        assert reader.unit_stats(MODEL, LAYER, 3)["run_id"] == "new"
        assert reader.unit_record(MODEL, "conv", 1)["stats"]["mean"] == 1.0
    finally:
        reader.close()


def test_an_unreadable_shard_fails_in_one_line_and_keeps_the_published_store(store, tmp_path):
    before = store.read_bytes()
    (meta,) = [p for p in (tmp_path / "work" / "shards").rglob("meta.json") if p.parent.name.endswith("-old")]
    meta.write_text('{"key": "old", "finished_at": ')  # a meta.json cut short
    with pytest.raises(StoreError) as failure:
        ingest(tmp_path / "work", store, progress=False)
    message = one_line(failure.value)
    assert message.startswith(f"ingest failed, {store} left as it was: ") and "\n" not in message
    assert store.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_a_shard_with_a_column_the_table_no_longer_has_still_loads(tmp_path):
    """Work folders keep their shards: one written when unit_stats had one more column loads without it."""
    work = tmp_path / "work"
    write_model_record(work)
    rows = stats_rows(range(0, 2), 1.5, "wide").append_column("retired", pa.array([7, 7]))
    write_shard(work, "wide", range(0, 2), 1000.0, {"unit_stats": rows})
    path = tmp_path / "s.duckdb"
    ingest(work, path, progress=False)
    store = Store(path)
    assert [store.unit_stats(MODEL, LAYER, u)["mean"] for u in (0, 1)] == [1.5, 1.5]
    store.close()
