"""Dependencies have one source, pyproject.toml: the `serve` extra holds everything the serving code imports (the
Docker image installs it without torch), `pip install .` serves too, and a missing optional extra (s3fs) is one
line that says which extra to install."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; one Python checks pyproject.toml for all
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
FIRST_PARTY = {"app", "app_pages", "dashboard", "precompute", "store"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503: case and runs of -_. do not matter)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def _serving_imports() -> set[str]:
    """Top-level modules imported anywhere (functions included) by the code that the serving image runs."""
    files = [ROOT / "app.py", *(p for d in ("app_pages", "dashboard", "store") for p in (ROOT / d).rglob("*.py"))]
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - FIRST_PARTY


def test_the_serve_extra_provides_every_module_the_serving_code_imports():
    serve = {_name(r) for r in PROJECT["optional-dependencies"]["serve"]}
    providers = importlib.metadata.packages_distributions()
    imports = _serving_imports()
    assert {"streamlit", "duckdb", "PIL", "pandas"} <= imports  # the walk sees the imports it should
    missing = {m: providers.get(m) for m in imports if not serve & {_name(d) for d in providers.get(m, [])}}
    assert not missing, f"imported by the serving code but not in the serve extra: {missing}"


def test_pip_install_dot_serves_and_the_extras_stay_optional():
    base = {_name(r): r for r in PROJECT["dependencies"]}
    extras = PROJECT["optional-dependencies"]
    # Every serving requirement, with the same range, is a base dependency: `pip install .` runs the demo and serves.
    assert [r for r in extras["serve"] if base.get(_name(r)) != r] == []
    assert not {"torch", "torchvision", "timm"} & {_name(r) for r in extras["serve"]}
    assert "ray" not in base and "s3fs" not in base
    assert [_name(r) for r in extras["ray"]] == ["ray"] and [_name(r) for r in extras["s3"]] == ["s3fs"]
    assert "microscope[ray,s3]" in extras["dev"]  # the Ray and S3 tests run in every test run


def _cli_without(module: str, *argv: str) -> subprocess.CompletedProcess:
    """`microscope ARGV` in a fresh process where importing MODULE fails as if it were not installed (a None entry
    in sys.modules). A fresh process, because fsspec keeps the classes of backends it has imported once."""
    code = f"import sys; sys.modules[{module!r}] = None; from precompute.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_an_s3_work_folder_without_s3fs_is_one_line(tmp_path):
    store = tmp_path / "s.duckdb"
    done = _cli_without("s3fs", "ingest", "--work", "s3://bucket/work", "--store", str(store))
    assert done.returncode == 1
    assert done.stderr == "microscope: error: s3:// work folders need s3fs: pip install 'microscope[s3]'\n"
    assert list(tmp_path.iterdir()) == []  # no store, and no leftover download folder


def test_an_s3_store_without_s3fs_is_one_line(tmp_path):
    done = _cli_without("s3fs", "serve", "--store", "s3://bucket/microscope.duckdb", "--cache", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == "microscope: error: s3:// stores need s3fs: pip install 'microscope[s3]'\n"
