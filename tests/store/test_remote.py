"""A remote store mirrored into a local cache: fetched over HTTP from a loopback server and from S3 on a loopback
moto_server, checked, hot-swapped when a newer file is published, and kept when the newer file is bad."""

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from store import SCHEMA_VERSION, StoreError, remote
from store.queries import Store

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def variant(source: Path, dest: Path, built_at: str, schema_version: str | None = None) -> Path:
    """A copy of a real store with another build time (a republished store) or another schema version."""
    shutil.copy(source, dest)
    con = duckdb.connect(str(dest))
    con.execute("UPDATE meta SET value = ? WHERE key = 'built_at'", [built_at])
    if schema_version is not None:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [schema_version])
    con.close()
    return dest


def publish(src: Path, folder: Path, stamp: int) -> None:
    """Replaces the served file as a publisher would (rename over it); a distinct mtime, as Last-Modified has
    one-second resolution."""
    tmp = folder / ".incoming"
    shutil.copy(src, tmp)
    os.utime(tmp, (stamp, stamp))
    os.replace(tmp, folder / "store.duckdb")


def built_at(path: Path) -> str:
    store = Store(path)
    try:
        return store.built_at()
    finally:
        store.close()


@pytest.fixture(scope="module")
def versions(tiny_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("versions")
    return {"v1": variant(tiny_store, folder / "v1.duckdb", "2026-01-01T00:00:00+00:00"),
            "v2": variant(tiny_store, folder / "v2.duckdb", "2026-02-02T00:00:00+00:00"),
            "old_schema": variant(tiny_store, folder / "old_schema.duckdb", "2026-03-03T00:00:00+00:00",
                                  schema_version="1")}


def test_location_kinds():
    assert remote.is_remote("https://example.org/s.duckdb") and remote.is_remote("s3://b/k")
    assert remote.is_remote("hf://datasets/org/name/store.duckdb")
    assert not remote.is_remote("data/microscope.duckdb") and not remote.is_remote("/abs/s.duckdb")
    assert not remote.is_remote("file:///abs/s.duckdb") and not remote.is_remote("C://x")
    assert remote.redact("https://h/s.duckdb?X-Amz-Signature=secret") == "https://h/s.duckdb?…"


def test_http_fetch_hot_swap_and_bad_versions_keep_the_good_copy(http_site, versions, tmp_path):
    folder, base = http_site
    publish(versions["v1"], folder, 1_700_000_000)
    mirror = remote.Mirror(f"{base}/store.duckdb", tmp_path / "cache", interval=3600)

    path = mirror.current()
    assert path.read_bytes() == versions["v1"].read_bytes() and mirror.error is None
    assert built_at(path) == "2026-01-01T00:00:00+00:00" and mirror.fetched_at()
    assert mirror.refresh() is False  # unchanged: a 304, nothing downloaded or swapped

    # A page reading the old copy keeps working across the swap: the rename leaves its open file intact. (DuckDB
    # hands out the database it has open for a path, so the new copy is read once the old one is closed, as
    # dashboard.data does.)
    reader = Store(path)
    publish(versions["v2"], folder, 1_700_000_100)
    assert mirror.refresh() is True
    assert reader.built_at() == "2026-01-01T00:00:00+00:00" and reader.models()
    reader.close()
    assert mirror.current().read_bytes() == (folder / "store.duckdb").read_bytes()
    assert built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"

    publish(versions["old_schema"], folder, 1_700_000_200)
    assert mirror.refresh() is False
    assert mirror.error == (f"store {base}/store.duckdb has schema 1; this version of Microscope reads "
                            f"{SCHEMA_VERSION}: rebuild it with `microscope ingest`")
    assert built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"
    assert mirror.refresh() is False and "has schema 1" in mirror.error  # the same bad file: same verdict

    (folder / "garbage").write_bytes(os.urandom(300_000))
    publish(folder / "garbage", folder, 1_700_000_300)
    assert mirror.refresh() is False and "corrupt" in mirror.error
    assert built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"
    assert not list(path.parent.glob("*.part"))

    publish(versions["v1"], folder, 1_700_000_400)  # a good one again clears the message
    assert mirror.refresh() is True and mirror.error is None
    assert built_at(mirror.current()) == "2026-01-01T00:00:00+00:00"


def test_unreachable_remote(http_site, versions, tmp_path):
    dead = remote.Mirror(f"http://127.0.0.1:{free_port()}/store.duckdb", tmp_path / "c1", interval=0)
    with pytest.raises(StoreError, match="cannot reach store"):
        dead.current()

    folder, base = http_site
    publish(versions["v1"], folder, 1_700_000_000)
    mirror = remote.Mirror(f"{base}/store.duckdb", tmp_path / "c2", interval=3600)
    good = mirror.current()
    (folder / "store.duckdb").unlink()
    assert mirror.refresh() is False and "HTTP 404" in mirror.error
    assert mirror.current() == good and built_at(good) == "2026-01-01T00:00:00+00:00"


def test_a_cut_download_is_not_used(versions, tmp_path):
    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = versions["v1"].read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = remote.Mirror(f"http://127.0.0.1:{server.server_address[1]}/s.duckdb", tmp_path / "c", interval=0)
        with pytest.raises(StoreError):
            mirror.current()
        assert not mirror.path.exists() and not list(mirror.folder.glob("*.part"))
    finally:
        server.shutdown()
        server.server_close()


def test_a_new_process_reuses_a_good_cached_copy_and_drops_one_of_another_schema(http_site, versions, tmp_path):
    folder, base = http_site
    publish(versions["v1"], folder, 1_700_000_000)
    url = f"{base}/store.duckdb"
    remote.Mirror(url, tmp_path / "cache", interval=3600).current()

    later = remote.Mirror(url, tmp_path / "cache", interval=3600)
    later._adopt_cache()
    assert later.ready  # served at once from the cache, checked later in the background

    shutil.copy(versions["old_schema"], later.path)  # what an older Microscope's cache would hold
    stale = remote.Mirror(url, tmp_path / "cache", interval=3600)
    stale._adopt_cache()
    assert not stale.ready
    assert built_at(stale.current()) == "2026-01-01T00:00:00+00:00"  # fetched again


def test_s3_fetch_checksum_and_hot_swap(moto_endpoint, versions, tmp_path, monkeypatch):
    pytest.importorskip("s3fs")
    import boto3

    # The standard AWS variables are how a deployment points s3fs at another S3 (MinIO, R2, ...).
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="lab")
    s3.upload_file(str(versions["v1"]), "lab", "published/store.duckdb")

    mirror = remote.Mirror("s3://lab/published/store.duckdb", tmp_path / "cache", interval=3600)
    assert built_at(mirror.current()) == "2026-01-01T00:00:00+00:00"
    assert mirror.refresh() is False  # same ETag

    s3.upload_file(str(versions["v2"]), "lab", "published/store.duckdb")
    assert mirror.refresh() is True and built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"

    s3.upload_file(str(versions["old_schema"]), "lab", "published/store.duckdb")
    assert mirror.refresh() is False and "has schema 1" in mirror.error
    assert built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"

    missing = remote.Mirror("s3://lab/nothing.duckdb", tmp_path / "cache", interval=0)
    with pytest.raises(StoreError, match="no store at s3://lab/nothing.duckdb"):
        missing.current()


def test_checksum_mismatch_is_rejected(versions, tmp_path):
    part = tmp_path / "x.part"
    shutil.copy(versions["v1"], part)
    remote.check_download(part, remote.Fetched({}, size=part.stat().st_size))
    with pytest.raises(StoreError, match="incomplete"):
        remote.check_download(part, remote.Fetched({}, size=part.stat().st_size + 1))
    with pytest.raises(StoreError, match="md5"):
        remote.check_download(part, remote.Fetched({}, md5="0" * 32))


def test_serve_with_an_unreachable_remote_fails_with_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/store.duckdb?X-Amz-Signature=secret"
    out = subprocess.run([sys.executable, "-m", "precompute.cli", "serve", "--store", url, "--cache", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microscope: error: cannot reach store http://127.0.0.1:")
    assert "secret" not in out.stderr + out.stdout


def test_hf_store_from_a_loopback_hub_checksum_pin_and_hot_swap(versions, tmp_path, monkeypatch):
    """`hf://` through huggingface_hub's own HfFileSystem, talking to a loopback Hub (tests/hub_support.py)."""
    from tests.hub_support import LoopbackHub, use_hub

    with LoopbackHub() as hub:
        use_hub(monkeypatch, tmp_path / "hf", hub.endpoint)
        v1 = hub.publish("lab/stores", {"store.duckdb": versions["v1"].read_bytes()}, repo_type="dataset",
                         tags=("v1",))
        mirror = remote.Mirror("hf://datasets/lab/stores/store.duckdb", tmp_path / "cache", interval=3600)
        assert built_at(mirror.current()) == "2026-01-01T00:00:00+00:00" and mirror.error is None
        assert hub.saw("/api/datasets/lab/stores/paths-info/main") and hub.saw("/blobs/")  # LFS, via the CDN
        assert mirror.refresh() is False  # the same blob

        # A republished store of the very same size: only the git blob id tells it apart.
        assert versions["v2"].stat().st_size == versions["v1"].stat().st_size
        hub.publish("lab/stores", {"store.duckdb": versions["v2"].read_bytes()}, repo_type="dataset")
        assert mirror.refresh() is True and built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"

        pinned = remote.Mirror("hf://datasets/lab/stores@v1/store.duckdb", tmp_path / "cache", interval=3600)
        assert built_at(pinned.current()) == "2026-01-01T00:00:00+00:00"
        assert hub.saw("/api/datasets/lab/stores/revision/v1") and hub.saw("/api/datasets/lab/stores/paths-info/v1")
        by_commit = remote.Mirror(f"hf://datasets/lab/stores@{v1}/store.duckdb", tmp_path / "cache", interval=3600)
        assert by_commit.current().read_bytes() == versions["v1"].read_bytes()

        # The CDN hands out other bytes than the ones the Hub's LFS SHA-256 announces: refused, the copy stays.
        old_schema = versions["old_schema"].read_bytes()
        hub.publish("lab/stores", {"store.duckdb": old_schema}, repo_type="dataset")
        sha = next(k for k, v in hub.blobs.items() if v == old_schema)
        hub.blobs[sha] = versions["v1"].read_bytes()[: len(old_schema)]
        assert mirror.refresh() is False and "store download corrupt: sha256" in mirror.error
        hub.blobs[sha] = old_schema
        assert mirror.refresh() is False and "has schema 1" in mirror.error
        assert built_at(mirror.current()) == "2026-02-02T00:00:00+00:00"

        for location in ("hf://datasets/lab/stores/nothing.duckdb", "hf://datasets/lab/nowhere/store.duckdb"):
            missing = remote.Mirror(location, tmp_path / "cache", interval=0)
            with pytest.raises(StoreError, match=f"no store at {location}"):
                missing.current()
