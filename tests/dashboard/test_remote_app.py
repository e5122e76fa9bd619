"""The dashboard on a remote store (a loopback HTTP server): an open page picks up a newer published store on its
next run, and a bad newer file or an unreachable remote is a message while the previous good store keeps serving."""

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from store import SCHEMA_VERSION, remote
from tests.app_support import APP, MODEL_ID

pytestmark = pytest.mark.app


def publish(app_store: Path, folder: Path, built_at: str, stamp: int, schema_version: str = SCHEMA_VERSION) -> None:
    tmp = folder / ".incoming"
    shutil.copy(app_store, tmp)
    con = duckdb.connect(str(tmp))
    con.execute("UPDATE meta SET value = ? WHERE key = 'built_at'", [built_at])
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [schema_version])
    con.close()
    os.utime(tmp, (stamp, stamp))
    os.replace(tmp, folder / "store.duckdb")


def sidebar(at: AppTest) -> str:
    return "\n".join([c.value for c in at.sidebar.caption] + [w.value for w in at.sidebar.warning])


def unit_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("app_pages/unit.py")
    for name, value in {"model": MODEL_ID, "layer": "2", "unit": "3"}.items():
        at.query_params[name] = value
    return at


def headings(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("title", "header", "subheader") for e in getattr(at, kind))


def test_open_page_follows_the_published_store(app_store, http_site, tmp_path, monkeypatch):
    folder, base = http_site
    url = f"{base}/store.duckdb?v={quote('a b')}"  # a query string, as presigned URLs have; never shown
    publish(app_store, folder, "2026-01-01T00:00:00+00:00", 1_700_000_000)
    monkeypatch.setenv("MICROSCOPE_STORE", url)
    monkeypatch.setenv("MICROSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MICROSCOPE_REFRESH", "3600")

    at = unit_page()
    at.run()
    assert not at.exception and f"{MODEL_ID}@2:3" in headings(at)
    assert "built 2026-01-01" in sidebar(at) and f"{base}/store.duckdb?…" in sidebar(at)
    assert "v=a" not in sidebar(at)

    held = remote.mirror(url, tmp_path / "cache")
    publish(app_store, folder, "2026-02-02T00:00:00+00:00", 1_700_000_100)
    assert held.refresh()  # what the background check does once MICROSCOPE_REFRESH seconds have passed
    at.run()  # the open page's next interaction
    assert not at.exception and f"{MODEL_ID}@2:3" in headings(at)
    assert "built 2026-02-02" in sidebar(at)

    publish(app_store, folder, "2026-03-03T00:00:00+00:00", 1_700_000_200, schema_version="1")
    assert not held.refresh()
    at.run()
    assert not at.exception and f"{MODEL_ID}@2:3" in headings(at)
    assert "built 2026-02-02" in sidebar(at)
    warning = at.sidebar.warning[0].value
    assert "has schema 1" in warning and "rebuild it with `microscope ingest`" in warning
    assert "Still showing the store fetched" in warning


def test_the_background_check_swaps_without_a_restart(app_store, http_site, tmp_path, monkeypatch):
    folder, base = http_site
    url = f"{base}/store.duckdb"
    publish(app_store, folder, "2026-01-01T00:00:00+00:00", 1_700_000_000)
    monkeypatch.setenv("MICROSCOPE_STORE", url)
    monkeypatch.setenv("MICROSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MICROSCOPE_REFRESH", "0")

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert "built 2026-01-01" in sidebar(at)
    publish(app_store, folder, "2026-02-02T00:00:00+00:00", 1_700_000_100)
    at.run()  # this run finds a check due and starts it in the background
    remote.mirror(url, tmp_path / "cache").wait()
    at.run()
    assert not at.exception and "built 2026-02-02" in sidebar(at)


def test_unreachable_remote_without_a_copy_says_so(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MICROSCOPE_STORE", f"http://127.0.0.1:{port}/store.duckdb")
    monkeypatch.setenv("MICROSCOPE_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert "cannot reach store" in at.error[0].value
    assert "Nothing has been fetched from it yet" in "\n".join(c.value for c in at.caption)


def test_a_store_published_on_the_hub(app_store, tmp_path, monkeypatch):
    """`hf://` through huggingface_hub's HfFileSystem, from a loopback Hub (tests/hub_support.py), republished."""
    from tests.hub_support import LoopbackHub, use_hub

    folder = tmp_path / "published"
    folder.mkdir()
    with LoopbackHub() as hub:
        use_hub(monkeypatch, tmp_path / "hf", hub.endpoint)
        location = "hf://datasets/lab/microscope@main/store.duckdb"
        publish(app_store, folder, "2026-01-01T00:00:00+00:00", 1_700_000_000)
        hub.publish("lab/microscope", {"store.duckdb": (folder / "store.duckdb").read_bytes()}, repo_type="dataset")
        monkeypatch.setenv("MICROSCOPE_STORE", location)
        monkeypatch.setenv("MICROSCOPE_CACHE", str(tmp_path / "cache"))
        monkeypatch.setenv("MICROSCOPE_REFRESH", "3600")

        at = unit_page()
        at.run()
        assert not at.exception and f"{MODEL_ID}@2:3" in headings(at)
        assert "built 2026-01-01" in sidebar(at) and location in sidebar(at)
        assert hub.saw("/api/datasets/lab/microscope/paths-info/main") and hub.saw("/blobs/")

        publish(app_store, folder, "2026-02-02T00:00:00+00:00", 1_700_000_100)
        hub.publish("lab/microscope", {"store.duckdb": (folder / "store.duckdb").read_bytes()}, repo_type="dataset")
        assert remote.mirror(location, tmp_path / "cache").refresh()
        at.run()
        assert not at.exception and "built 2026-02-02" in sidebar(at)
