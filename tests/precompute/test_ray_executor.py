"""`--executor ray` on a local two-CPU Ray cluster: the same store as the local executor, bounded retries and
failures reported by key, a worker that dies, a driver killed with kill -9 and started again, and a work
folder on an S3-compatible server (moto) on loopback."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from precompute.cli import main
from precompute.jobs import Job, write_shard
from precompute.models import Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from store.shards import finished_shards

pytestmark = [pytest.mark.integration, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[2]
VOLATILE = {"finished_at", "seconds", "built_at", "work"}  # when, how fast and from which folder, not what

# A model that fails by batch size, run with --batch-size 20 and 64 images: a batch of 16 comes only from the
# tuning stimulus pass (the 96 corner stimuli), so every tuning job raises, on every attempt, each attempt
# noted in ATTEMPTS; a batch of 4 comes only from the dataset pass (its last), and the first one kills its
# worker process outright (once: DIED is created atomically), as an out-of-memory kill would.
FLAKY_FACTORY = '''
import os
import torch
from torch import nn

ATTEMPTS, DIED = {attempts!r}, {died!r}


class Flaky(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x):
        if x.shape[0] == 16:
            with open(ATTEMPTS, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            raise RuntimeError("this model rejects batches of 16")
        if x.shape[0] == 4:
            try:
                os.close(os.open(DIED, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return self.body(x)


def build():
    return Flaky()
'''

# The tiny model, slowed down on dataset batches so that a driver can be killed while its tasks run.
SLOW_FACTORY = '''
import time
import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU()))

    def forward(self, x):
        if x.shape[0] == 16:
            time.sleep(0.3)
        return self.body(x)


def build():
    return Slow()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(moto_endpoint):
    """moto's S3 server on loopback, with the credentials and endpoint in the environment from before the Ray
    cluster starts, as they would be on a cluster's nodes."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": moto_endpoint}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield moto_endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def cluster(s3_server):
    """A fresh local Ray cluster of two CPUs in this process (not one that another process started), writing
    nothing under the home folder."""
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(address="local", num_cpus=2, _temp_dir=temp, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _rows(store: Path) -> dict[str, list]:
    """Every table's rows, in a stable order, without the columns that say when or how fast."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
        out = {}
        for table in tables:
            columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in VOLATILE]
            rows = con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            out[table] = sorted((r for r in rows if not (table == "meta" and r[0] in VOLATILE)), key=_order)
        return out
    finally:
        con.close()


def _order(value):
    """A sort key that floats' last bits do not change (see _same)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return tuple(_order(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _order(v)) for k, v in value.items()))
    return repr(value)


def _same(a, b) -> bool:
    """Equal values, floats to float32 rounding. A Ray worker runs torch on one thread, the local executor on
    every core: a product summed in another order may differ in its last bits (seen in circuit weights).
    Everything else, images and every key, rank and index, must be identical."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-5, abs=1e-6) or (a != a and b != b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _assert_same_rows(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for table in expected:
        assert len(got[table]) == len(expected[table]), table
        for row, want in zip(got[table], expected[table]):
            assert _same(row, want), (table, row, want)


def _tiny_request(factory, store, **kw) -> Request:
    """The request that built the `tiny_store` fixture (default techniques, 64 images at 64 px)."""
    return Request(model=f"{factory}:build", store=store, max_images=64, k=8, progress=False,
                   overrides=Overrides(name="tiny", input_size=64), **kw)


def test_failing_jobs_are_retried_then_reported_by_key_and_a_dead_worker_is_replaced(cluster, tmp_path, capsys):
    attempts, died = tmp_path / "attempts.txt", tmp_path / "died"
    factory = tmp_path / "flaky_model.py"
    factory.write_text(FLAKY_FACTORY.format(attempts=str(attempts), died=str(died)))
    store = tmp_path / "s.duckdb"
    code = main(["precompute", f"{factory}:build", "--name", "flaky", "--input-size", "64", "--max-images", "64",
                 "--batch-size", "20", "--k", "4", "--techniques", "stats,dataset,tuning", "--executor", "ray",
                 "--store", str(store)])
    out, err = capsys.readouterr()
    assert code == 1, err
    con = duckdb.connect(str(store), read_only=True)
    layers, all_units = con.execute("SELECT count(*), sum(units) FROM layers").fetchone()
    ran = con.execute("SELECT technique, count(*) FROM runs GROUP BY 1 ORDER BY 1").fetchall()
    units = con.execute("SELECT count(*) FROM unit_stats").fetchone()[0]
    con.close()
    # The dataset pass survived its worker's death (Ray ran the task again) and every pass shard is stored.
    assert died.exists()
    assert layers > 1 and ran == [("dataset", layers), ("stats", layers)] and units == all_units
    # Each tuning job: the first attempt and two retries, then one line naming it by key.
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("microscope: error: ")]
    assert len(lines) == layers and all(line.startswith("microscope: error: job ") for line in lines)
    assert all("tuning) failed: RuntimeError: this model rejects batches of 16" in line for line in lines)
    keys = {line.split()[3] for line in lines}
    assert len(keys) == layers and all(len(k) == 16 for k in keys)
    finished = {Path(s).name.rsplit("-", 1)[1] for s in finished_shards(tmp_path / "s.work")}
    assert not keys & finished and len(finished) == 2 * layers
    # Three attempts per job. A worker process's first tuning attempt calls the model twice: the stimulus pass
    # of every layer, which fails, and then its own layer's alone (the fallback that isolates a failing layer).
    pids = attempts.read_text().splitlines()
    assert len(pids) == 3 * layers + len(set(pids))
    assert f"{2 * layers} jobs run, 0 already done" in out


def _ray_processes(marker: str) -> list[int]:
    """Processes started with RAY_TMPDIR=marker in their environment: the Ray processes of one driver (their
    command lines are renamed, their environment is not)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"RAY_TMPDIR={marker}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_driver_killed_midway_then_restarted_runs_each_job_exactly_once(tmp_path):
    factory = tmp_path / "slow_model.py"
    factory.write_text(SLOW_FACTORY)
    store, work = tmp_path / "s.duckdb", tmp_path / "s.work"
    ray_tmp = tempfile.mkdtemp(prefix="rayk", dir="/tmp")
    cmd = [sys.executable, "-m", "precompute.cli", "precompute", f"{factory}:build", "--name", "slow",
           "--input-size", "64", "--max-images", "64", "--batch-size", "16", "--k", "4",
           "--techniques", "stats,dataset", "--executor", "ray", "--store", str(store)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline and not finished_shards(work) and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Ray's processes share the driver's fate; wait for them to go, so none writes after the snapshot.
        deadline = time.time() + 30
        while _ray_processes(ray_tmp) and time.time() < deadline:
            time.sleep(0.2)
        for pid in _ray_processes(ray_tmp):  # this test's own processes, should any have outlived the driver
            os.kill(pid, signal.SIGKILL)
        before = {Path(s).name: ((Path(s) / "meta.json").read_bytes(), (Path(s) / "meta.json").stat().st_mtime_ns)
                  for s in finished_shards(work)}
        assert 0 < len(before) < 6, "the kill should land while the tasks run"  # 3 layers, 2 jobs each
        assert not store.exists()

        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        con = duckdb.connect(str(store), read_only=True)
        layers, units = con.execute("SELECT count(*), sum(units) FROM layers").fetchone()
        assert f"{2 * layers - len(before)} jobs run, {len(before)} already done" in done.stdout
        assert con.execute("SELECT count(*), count(DISTINCT run_id) FROM runs").fetchone() == (2 * layers,) * 2
        assert con.execute("SELECT count(*), count(DISTINCT (layer, unit)) FROM unit_stats").fetchone() == (units,) * 2
        con.close()
        shards = finished_shards(work)
        assert len(shards) == 2 * layers  # stats and dataset for each layer
        local = tmp_path / "local" / "s.duckdb"  # the same request, uninterrupted, on the local executor
        precompute(Request(model=f"{factory}:build", store=local, max_images=64, batch_size=16, k=4,
                           techniques="stats,dataset", progress=False, overrides=Overrides(name="slow", input_size=64)))
        _assert_same_rows(_rows(store), _rows(local))
        for shard in shards:  # the shards from before the kill were not written again
            if Path(shard).name in before:
                meta = Path(shard) / "meta.json"
                assert (meta.read_bytes(), meta.stat().st_mtime_ns) == before[Path(shard).name]
        deadline = time.time() + 30  # ray.shutdown() stops them; the last ones exit in a moment
        while _ray_processes(ray_tmp) and time.time() < deadline:
            time.sleep(0.2)
        assert not _ray_processes(ray_tmp), "the restarted driver left Ray processes behind"
    finally:
        for pid in _ray_processes(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _bucket(endpoint: str, name: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir(name)  # no region: moto's default, as with a real S3-compatible server's
    return f"s3://{name}/work"


def test_ray_on_an_s3_work_folder_builds_the_same_store_as_the_local_executor(cluster, s3_server, tiny_factory,
                                                                             tiny_store, tmp_path):
    """`tiny_store` was built by the local executor in a local work folder; here Ray workers write every shard
    into a bucket, and the store holds the same rows (images byte for byte)."""
    work = _bucket(s3_server, "microscope-ray")
    summary = precompute(_tiny_request(tiny_factory, tmp_path / "s3.duckdb", executor="ray", work=work))
    assert summary["failed"] == [] and summary["skipped"] == 0 and summary["ran"] == summary["jobs"] > 0
    assert len(finished_shards(work)) == summary["jobs"]
    expected, got = _rows(tiny_store), _rows(tmp_path / "s3.duckdb")
    _assert_same_rows(got, expected)
    assert len(expected["images"]) == 64 and len(expected["unit_stats"]) == 37 and expected["tuning"]
    # A rerun is free; `microscope ingest` from the bucket alone rebuilds the same store, leaving no copy behind.
    again = precompute(_tiny_request(tiny_factory, tmp_path / "s3.duckdb", executor="ray", work=work))
    assert again["ran"] == 0 and again["skipped"] == summary["jobs"]
    assert main(["ingest", "--work", work + "/", "--store", str(tmp_path / "again.duckdb")]) == 0
    _assert_same_rows(_rows(tmp_path / "again.duckdb"), got)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("s3.duckdb")) == [
        "again.duckdb", "again.duckdb.lock"]


def test_an_unreadable_image_is_counted_once_from_the_workers(cluster, tiny_factory, tmp_path):
    """The driver's geometry probe reads only the first 8 images; the corrupt file comes after them, so only
    the workers' passes meet it (two layers: two tasks, each meeting it once)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(13):
        path = folder / f"{i:02d}.png"
        if i == 10:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(path)
    store = tmp_path / "s.duckdb"
    summary = precompute(_tiny_request(tiny_factory, store, layers="0,2.0", techniques="stats,dataset",
                                       dataset=f"folder:{folder}", executor="ray"))
    assert summary["failed"] == [] and summary["ran"] == 4 and summary["images_skipped"] == 1
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT images_seen, images_skipped, count(*) FROM runs GROUP BY ALL").fetchall() == [(12, 1, 4)]
    con.close()


def test_s3_shard_counts_only_once_its_meta_is_written(s3_server):
    work = _bucket(s3_server, "microscope-shards")
    job, other = Job("m", "l", "stats", 0, 4, "{}"), Job("m", "l", "stats", 4, 8, "{}")
    assert not job.done(work) and finished_shards(work) == []
    # A job killed after its Parquet files but before its meta.json: not finished, not ingested.
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{work[5:]}/{other.shard_rel}/unit_stats.parquet", b"half")
    write_shard(work, job, {"unit_stats": pa.table({"unit": [0, 1, 2, 3]})}, {"seed": 3})
    assert job.done(work) and not other.done(work)
    assert finished_shards(work) == [job.shard_dir(work)]
    meta = fs.cat_file(f"{work[5:]}/{job.shard_rel}/meta.json")
    write_shard(work, job, {"unit_stats": pa.table({"unit": [9]})}, {"seed": 4})  # a duplicate: not rewritten
    assert fs.cat_file(f"{work[5:]}/{job.shard_rel}/meta.json") == meta
