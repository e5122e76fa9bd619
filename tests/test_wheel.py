"""The package as `pip install .` ships it: the wheel holds the dashboard's entry, its pages and the store's schema,
and an installed copy, run from another folder, finds its entry, renders the dashboard from it and serves it. Serve
runs Streamlit where it reads its settings and secrets: a checkout's folder, or an installed copy's current one."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app_pages", "dashboard", "precompute", "store")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the source tree (the build leaves build/ and *.egg-info where it runs),
    unpacked into a folder, as pip would lay it out in site-packages."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT, src, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "data", "work", "*.work", "build", "dist", "*.egg-info", "__pycache__", "tests", "benchmarks"))
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("microscope-*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _run_installed(site: Path, cwd: Path, *argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """python ARGV from `cwd`, importing Microscope only from the unpacked wheel."""
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(site)})


def test_the_wheel_holds_every_module_the_entry_the_pages_and_the_schema(installed):
    source = {p.relative_to(ROOT).as_posix() for d in PACKAGES for p in (ROOT / d).rglob("*.py")}
    shipped = {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()}
    assert source - shipped == set()
    assert {"app.py", "store/schema.sql"} <= shipped


def test_an_installed_copy_finds_its_entry_from_another_folder(installed, tmp_path):
    from dashboard.links import PAGES

    done = _run_installed(installed, tmp_path, "-m", "precompute.cli", "entry")
    assert done.returncode == 0, done.stderr
    entry = Path(done.stdout.strip())
    assert entry == installed / "app.py"
    assert all((entry.parent / page).is_file() for page in PAGES.values())  # st.navigation resolves them there


RENDER = """
import sys
from streamlit.testing.v1 import AppTest
import dashboard
at = AppTest.from_file(sys.argv[1], default_timeout=90).run()
assert not at.exception, [e.value for e in at.exception]
print(dashboard.__file__)
print("\\n".join(s.value for s in at.subheader))
"""


@pytest.mark.app
def test_an_installed_copy_renders_the_dashboard_from_another_folder(installed, tiny_store, tmp_path):
    done = subprocess.run([sys.executable, "-c", RENDER, str(installed / "app.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(installed), "MICROSCOPE_STORE": str(tiny_store)})
    assert done.returncode == 0, done.stderr
    module, *models = done.stdout.splitlines()
    assert Path(module).is_relative_to(installed)  # the page ran the installed copy, not the checkout
    assert models == ["tiny"]


@contextlib.contextmanager
def _serving(cwd: Path, env: dict, store: Path):
    """`microscope serve` on a free loopback port, started in `cwd`; yields (pid, health answer) once it is up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(cwd / "serve.log", "w")
    argv = ["serve", "--store", str(store), "--port", str(port), "--address", "127.0.0.1"]
    proc = subprocess.Popen([sys.executable, "-m", "precompute.cli", *argv], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                    yield proc.pid, answer.read().decode()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"serve did not come up: {(cwd / 'serve.log').read_text()}") from None
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.app
def test_serve_from_a_checkout_runs_in_the_checkout(tiny_store, tmp_path):
    with _serving(tmp_path, {**os.environ, "PYTHONPATH": str(ROOT)}, tiny_store) as (pid, health):
        assert health == "ok"
        assert Path(f"/proc/{pid}/cwd").resolve() == ROOT  # .streamlit/ beside app.py, as the README says


@pytest.mark.app
def test_serve_from_an_installed_copy_runs_in_the_current_folder(installed, tiny_store, tmp_path):
    with _serving(tmp_path, {**os.environ, "PYTHONPATH": str(installed)}, tiny_store) as (pid, health):
        assert health == "ok"
        assert Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()  # never site-packages
        # No .streamlit/config.toml here: the command itself turns off the full collection after every run
        # (about 110 ms of CPU a page).
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"--runner.postScriptGC") + 1] == b"false"
