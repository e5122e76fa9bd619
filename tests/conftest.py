"""Shared test setup: the repo root on sys.path, no network, small fixtures built with the real pipeline."""

import functools
import http.server
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# A Hub load without this retries for about 40 s before failing; with it, it fails at once and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TINY_FACTORY = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5),
    )


def not_a_module():
    return 42
'''


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("factory") / "tiny_model.py"
    path.write_text(TINY_FACTORY)
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_factory) -> Path:
    """A store of the tiny model: every layer, both techniques, 64 sample crops at 64 px."""
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    store = tmp_path_factory.mktemp("store") / "tiny.duckdb"
    precompute(Request(model=f"{tiny_factory}:build", store=store, max_images=64, k=8, progress=False,
                       overrides=Overrides(name="tiny", input_size=64)))
    return store


def _die_with_parent() -> None:
    """Runs in the child before exec: a test run that is killed (a timeout) takes its server with it."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def moto_endpoint():
    """An S3-compatible server (moto) on a free loopback port, one per test module; yields its endpoint URL."""
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- the dashboard's fixture store ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def app_store(tmp_path_factory) -> Path:
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request
    from tests.app_support import APP_FACTORY, MODEL_ID

    folder = tmp_path_factory.mktemp("app_store")
    factory = folder / "tiny_app_model.py"
    factory.write_text(APP_FACTORY)
    store = folder / "s.duckdb"
    precompute(Request(model=f"{factory}:build", store=store, max_images=64, progress=False,
                       overrides=Overrides(name=MODEL_ID, input_size=64)))
    return store


@pytest.fixture
def store_env(app_store, monkeypatch) -> Path:
    monkeypatch.setenv("MICROSCOPE_STORE", str(app_store))
    return app_store


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per test module (tests/browser_support.py)."""
    from playwright.sync_api import sync_playwright

    from tests.browser_support import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# ---- a loopback web server -----------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_site(tmp_path):
    """A static web server on a free loopback port: (its folder, its base URL)."""
    folder = tmp_path / "site"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---- the notes database: SQLite and a real PostgreSQL ------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on loopback for the whole session (tests/postgres_support.py); its URL."""
    import shutil
    import tempfile

    from tests.postgres_support import postgres_server, require_postgres

    require_postgres()
    # Not under pytest's temp root: that is private to root (0700), and the server runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="microscope-pg-"))
    try:
        with postgres_server(folder) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def notes_url(request, tmp_path):
    """An empty notes database, once as a SQLite file and once on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'notes.sqlite'}"
        return
    import sqlalchemy as sa

    from store import notes

    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    try:
        notes.meta.drop_all(engine)
        yield url
        notes.meta.drop_all(engine)
    finally:
        engine.dispose()
