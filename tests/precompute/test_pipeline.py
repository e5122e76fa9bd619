"""The pipeline end to end on a tiny model: store contents, reruns, resuming after kill -9, determinism."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

from precompute.models import Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from store.queries import Store
from store.shards import finished_shards

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _request(factory, store, **kw):
    kw.setdefault("techniques", "stats,dataset")  # the dataset-pass techniques; tuning has its own tests
    return Request(model=f"{factory}:build", store=store, max_images=64, k=8, progress=False,
                   overrides=Overrides(name="tiny", input_size=64), **kw)


def test_store_holds_stats_and_examples_for_every_unit(tiny_store):
    store = Store(tiny_store)
    assert [m["model_id"] for m in store.models()] == ["tiny"]
    layers = store.layers("tiny")
    assert [(layer["layer"], layer["units"]) for layer in layers] == [("0", 8), ("2.0", 12), ("2", 12), ("5", 5)]
    for layer in layers:
        assert layer["stats_units"] == layer["units"] == layer["dataset_units"]
    record = store.unit_record("tiny", "2.0", 3)
    assert record["unit"] == "tiny@2.0:3"
    stats = record["stats"]
    assert stats["images"] == 64 and stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert sum(stats["hist_counts"]) == 64
    top = [e["activation"] for e in record["dataset"]["top"]]
    bottom = [e["activation"] for e in record["dataset"]["bottom"]]
    assert len(top) == len(bottom) == 8 and top == sorted(top, reverse=True) and bottom == sorted(bottom)
    assert top[0] == pytest.approx(stats["max"], rel=1e-5) and bottom[0] == pytest.approx(stats["min"], rel=1e-5)
    quantiles = record["dataset"]["quantile"]
    assert len(quantiles) == 11 and [q["activation"] for q in quantiles] == sorted(
        (q["activation"] for q in quantiles), reverse=True)
    for example in record["dataset"]["top"]:
        left, top_, right, bottom_ = example["crop_box"]
        assert 0 <= left < right <= 64 and 0 <= top_ < bottom_ <= 64
    assert {r["technique"] for r in record["provenance"]} == {"stats", "dataset", "tuning", "circuits",
                                                                "similar", "classes"}
    # Tuning (synthetic stimuli) and circuits (weights) use no dataset.
    assert all(r["dataset"] == ("sample" if r["technique"] in ("stats", "dataset", "similar", "classes") else None)
               and r["seed"] == 0
               for r in record["provenance"])
    thumbs = store.thumbnails("tiny", "2.0", list(range(12)))
    assert sorted(thumbs) == list(range(12))


def test_rerun_is_free_and_changes_nothing(tiny_factory, tmp_path):
    store = tmp_path / "s.duckdb"
    first = precompute(_request(tiny_factory, store, layers="0,2.0", units="0-3"))
    assert first["ran"] == 4 and first["skipped"] == 0
    before = Store(store).unit_record("tiny", "0", 2)
    second = precompute(_request(tiny_factory, store, layers="0,2.0", units="0-3"))
    assert second["ran"] == 0 and second["skipped"] == 4
    after = Store(store).unit_record("tiny", "0", 2)
    assert before["stats"] == after["stats"] and before["dataset"] == after["dataset"]
    # More units later: only the new jobs run, and the store holds both.
    third = precompute(_request(tiny_factory, store, layers="0", units="4-7"))
    assert third["ran"] == 2
    assert Store(store).layers("tiny")[0]["stats_units"] == 8


def image_folder(root: Path, count: int, corrupt_at: int | None = None) -> Path:
    """`count` readable PNG files of seeded noise, named in order; with `corrupt_at`, one more file at that
    position whose bytes are no image (it still ends in .png, so the folder dataset lists it)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count + (corrupt_at is not None)):
        path = root / f"{i:02d}.png"
        if i == corrupt_at:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(path)
    return root


def test_same_seed_same_results_and_other_dataset_replaces(tiny_factory, tmp_path):
    a = precompute(_request(tiny_factory, tmp_path / "a" / "s.duckdb", layers="2.0"))
    b = precompute(_request(tiny_factory, tmp_path / "b" / "s.duckdb", layers="2.0"))
    assert a["ran"] == b["ran"] == 2
    ra = Store(tmp_path / "a" / "s.duckdb").unit_record("tiny", "2.0", 5)
    rb = Store(tmp_path / "b" / "s.duckdb").unit_record("tiny", "2.0", 5)
    assert ra["stats"]["hist_counts"] == rb["stats"]["hist_counts"] and ra["dataset"] == rb["dataset"]
    # The same units over another dataset, into store a: new jobs (the dataset is in their params), and the
    # store now shows only the new dataset's results for them.
    folder = image_folder(tmp_path / "photos", 12)
    c = precompute(_request(tiny_factory, tmp_path / "a" / "s.duckdb", layers="2.0", dataset=f"folder:{folder}"))
    assert c["ran"] == 2 and c["skipped"] == 0
    rc = Store(tmp_path / "a" / "s.duckdb").unit_record("tiny", "2.0", 5)
    assert rc["stats"]["images"] == 12 and ra["stats"]["images"] == 64
    examples = [e for kind in ("top", "bottom", "quantile") for e in rc["dataset"][kind]]
    assert examples and {e["image_source"] for e in examples} <= {f"{i:02d}.png" for i in range(12)}
    assert {r["technique"]: r["dataset"] for r in rc["provenance"]} == {"stats": f"folder:{folder}",
                                                                        "dataset": f"folder:{folder}"}


def test_an_unreadable_image_is_counted_once(tiny_factory, tmp_path):
    """The geometry probe reads the first 8 images and the dataset pass reads them again: the corrupt third
    file is one skipped image, in the summary and in every stored run."""
    folder = image_folder(tmp_path / "photos", 10, corrupt_at=2)
    store = tmp_path / "s.duckdb"
    summary = precompute(_request(tiny_factory, store, layers="0,2.0", dataset=f"folder:{folder}"))
    assert summary["images_skipped"] == 1 and summary["ran"] == 4
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT images_seen, images_skipped, count(*) FROM runs GROUP BY ALL").fetchall() == [(10, 1, 4)]
    con.close()


def test_kill_9_midway_then_rerun_completes_exactly_once(tmp_path):
    """A real run of the bundled model, killed while it writes shards, then started again."""
    store, work = tmp_path / "s.duckdb", tmp_path / "s.work"
    cmd = [sys.executable, "-m", "precompute.cli", "precompute", "efficientnet_lite0.bundled", "--max-images", "48",
           "--layers", "blocks.1,blocks.2,blocks.3,conv_head", "--techniques", "stats,dataset", "--store", str(store)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not finished_shards(work) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(finished_shards(work))
    assert 0 < partial < 12, "the kill should land while shards are being written"
    assert not store.exists()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{12 - partial} jobs run, {partial} already done" in done.stdout
    assert len(finished_shards(work)) == 12  # conv_head: 3 chunks of 512 units
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 12
    assert con.execute("SELECT count(*) FROM unit_stats").fetchone()[0] == 24 + 40 + 80 + 1280
    assert con.execute("SELECT count(*), count(DISTINCT (layer, unit)) FROM thumbnails").fetchone() == (1424, 1424)
