"""The CLI as a user meets it: JSON outputs, images, and one clear line for every kind of bad input."""

import fcntl
import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from precompute.cli import main
from store import SCHEMA_VERSION

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store_copy(tiny_store, tmp_path) -> Path:
    """A private copy of the tiny store and its work folder, for tests that try to break it."""
    shutil.copytree(tiny_store.parent, tmp_path / "copy")
    return tmp_path / "copy" / tiny_store.name


def test_info_json_reports_models_layers_and_counts(capsys, tiny_store):
    code, out, _ = _cli(capsys, "info", "--json", "--store", tiny_store)
    assert code == 0
    info = json.loads(out)
    (model,) = info["models"]
    assert model["model"] == "tiny" and model["units"] == 37
    assert model["units_per_technique"] == {"circuits": 37, "classes": 37, "dataset": 37, "similar": 37,
                                           "stats": 37, "tuning": 37}
    assert [layer["layer"] for layer in model["layers"]] == ["0", "2.0", "2", "5"]


def test_unit_json_and_images(capsys, tiny_store, tmp_path):
    code, out, _ = _cli(capsys, "unit", "tiny", "2.0", 4, "--json", "--images", tmp_path / "imgs",
                        "--store", tiny_store)
    assert code == 0
    record = json.loads(out)
    assert record["unit"] == "tiny@2.0:4"
    assert {"unit", "stats", "dataset", "provenance", "images"} <= set(record)
    assert len(record["dataset"]["top"]) == 8 and record["stats"]["images"] == 64
    # The tiny store's 64 sample crops are all of skimage's astronaut, at several scales.
    first = record["dataset"]["top"][0]
    assert first["source_image"] == "skimage.astronaut" and len(first["source_box"]) == 4
    assert len(record["images"]) == 8 + 8 + 11  # this store has no feature visualisations
    assert all(Path(i["path"]).is_file() and i["path"].endswith(".png") for i in record["images"])
    assert [(i["technique"], i["kind"], i["rank"]) for i in record["images"][:2]] == [("dataset", "top", 0),
                                                                                       ("dataset", "top", 1)]


@pytest.mark.parametrize("argv, message", [
    (["unit", "nope", "0", 1], "model 'nope' is not in the store"),
    (["unit", "tiny", "blocks.9", 1], "has no layer 'blocks.9'"),
    (["unit", "tiny", "2.0", 12], "unit 12 is out of range for tiny@2.0 (units 0-11)"),
])
def test_unit_bad_input(capsys, tiny_store, argv, message):
    code, out, err = _cli(capsys, *argv, "--store", tiny_store)
    assert code == 1 and out == "" and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["precompute", "resnet9000"], "unknown model 'resnet9000'"),
    (["precompute", "efficientnet_lite0.bundled", "--layers", "blocks.42"], "unknown layer 'blocks.42'"),
    (["precompute", "efficientnet_lite0.bundled", "--layers", "b1", "--units", "0-24"], "unit 24 is out of range"),
    (["precompute", "{factory}:not_a_module"], "returned int, not a torch.nn.Module"),
    (["precompute", "efficientnet_lite0.bundled", "--dataset", "folder:/no/such/folder"], "dataset folder not found"),
    (["precompute", "efficientnet_lite0.bundled", "--techniques", "magic"], "unknown technique 'magic'"),
    (["precompute", "efficientnet_lite0.bundled", "--device", "cuda:7"], "cuda"),
])
def test_precompute_bad_input_leaves_the_store_untouched(capsys, store_copy, tiny_factory, argv, message):
    before = _digest(store_copy)
    argv = [a.replace("{factory}", str(tiny_factory)) for a in argv]
    code, out, err = _cli(capsys, *argv, "--store", store_copy)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("microscope: error: ")
    assert _digest(store_copy) == before


def test_corrupt_store_is_one_clear_line(capsys, tmp_path):
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a database" * 100)
    code, _, err = _cli(capsys, "info", "--store", bad)
    assert code == 1 and "cannot open store" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "info", "--store", tmp_path / "missing.duckdb")
    assert code == 1 and "microscope demo" in err


def test_locked_store_refuses_a_second_writer(capsys, store_copy):
    before = _digest(store_copy)
    with open(store_copy.with_name(store_copy.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        code, _, err = _cli(capsys, "ingest", "--store", store_copy)
    assert code == 1 and "is locked" in err
    assert _digest(store_copy) == before


def test_disk_full_mid_ingest_keeps_the_published_store(store_copy):
    """The file-size limit makes every write past 200 kB fail, as a full disk does."""
    before = _digest(store_copy)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run([sys.executable, "-m", "precompute.cli", "ingest", "--store", str(store_copy)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "ingest failed" in done.stderr and "left as it was" in done.stderr
    assert _digest(store_copy) == before
    assert not [p for p in store_copy.parent.iterdir() if ".tmp-" in p.name]


def _tables(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, sorted (a rebuild may insert them in another order); meta without built_at and
    work (a copy is rebuilt from its own work folder)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_schema = 'main' ORDER BY 1").fetchall()]
        where = {"meta": " WHERE key NOT IN ('built_at', 'work')"}
        return {t: sorted(con.execute(f"SELECT * FROM {t}" + where.get(t, "")).fetchall(), key=repr) for t in names}
    finally:
        con.close()


def test_ingest_rebuilds_the_same_store(capsys, store_copy):
    before = _tables(store_copy)
    code, out, _ = _cli(capsys, "ingest", "--store", store_copy)
    assert code == 0 and "37 unit_stats" in out
    after = _tables(store_copy)
    assert list(after) == list(before) and before["runs"] and before["images"]
    for table in before:
        assert after[table] == before[table], table
    code, out, _ = _cli(capsys, "info", "--json", "--store", store_copy)
    assert json.loads(out)["work"] == str(store_copy.with_name("tiny.work").resolve())


def test_two_stores_in_one_folder_each_hold_their_own_model(capsys, tiny_factory, tmp_path):
    """Before each store had its own work folder, the second store here was built from both runs' shards."""
    stores = tmp_path / "stores"
    for name in ("a", "b"):
        code, _, err = _cli(capsys, "precompute", f"{tiny_factory}:build", "--name", f"model-{name}", "--input-size",
                            32, "--max-images", 8, "--techniques", "stats", "--store", stores / f"{name}.duckdb")
        assert code == 0, err
    for name in ("a", "b"):
        code, out, _ = _cli(capsys, "info", "--json", "--store", stores / f"{name}.duckdb")
        info = json.loads(out)
        assert [m["model"] for m in info["models"]] == [f"model-{name}"]
        assert info["work"] == str((stores / f"{name}.work").resolve())
    code, out, _ = _cli(capsys, "info", "--store", stores / "a.duckdb")
    assert f"built from the work folder {(stores / 'a.work').resolve()}" in out
    # Sharing on purpose still works: one work folder named for both, and the second store holds both models.
    shared = tmp_path / "shared"
    for name in ("a", "b"):
        code, _, err = _cli(capsys, "precompute", f"{tiny_factory}:build", "--name", f"model-{name}", "--input-size",
                            32, "--max-images", 8, "--techniques", "stats", "--store", stores / f"s{name}.duckdb",
                            "--work", shared)
        assert code == 0, err
    code, out, _ = _cli(capsys, "info", "--json", "--store", stores / "sb.duckdb")
    assert [m["model"] for m in json.loads(out)["models"]] == ["model-a", "model-b"]


def test_a_store_of_another_schema_is_one_line_saying_how_to_rebuild_it(capsys, store_copy):
    con = duckdb.connect(str(store_copy))
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    expected = (f"microscope: error: store {store_copy} has schema 1; this version of Microscope reads "
                f"{SCHEMA_VERSION}: rebuild it with `microscope ingest`\n")
    for argv in (["info", "--json"], ["unit", "tiny", "2.0", 4, "--json"]):
        code, out, err = _cli(capsys, *argv, "--store", store_copy)
        assert (code, out, err) == (1, "", expected)
    assert _cli(capsys, "ingest", "--store", store_copy)[0] == 0  # what the line says to do
    code, out, _ = _cli(capsys, "info", "--json", "--store", store_copy)
    assert code == 0 and json.loads(out)["schema_version"] == SCHEMA_VERSION


def test_models_lists_every_registry_entry_with_its_layer_and_unit_counts(capsys):
    from precompute.models import REGISTRY

    code, out, _ = _cli(capsys, "models")
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip() and not line.startswith("Also:")}
    assert list(rows) == list(REGISTRY)
    for model_id, spec in REGISTRY.items():
        counts = re.search(r" (\d+) layers +(\d+) units ", rows[model_id]).groups()
        assert counts == (str(len(spec.layers)), str(sum(layer.units for layer in spec.layers))), model_id
    assert re.search(r"^efficientnet_lite0\.bundled +9 layers +2096 units +224px +bundled$", out, re.M)


def test_entry_is_the_app_beside_its_pages(capsys):
    from dashboard.links import PAGES

    code, out, _ = _cli(capsys, "entry")
    assert code == 0 and out == f"{ROOT / 'app.py'}\n"
    assert all((ROOT / page).is_file() for page in PAGES.values())


def test_demo_with_a_store_says_so_and_does_not_rebuild_it(capsys, store_copy):
    before = _digest(store_copy), sorted(p.name for p in store_copy.parent.rglob("*"))
    code, out, err = _cli(capsys, "demo", "--no-serve", "--store", store_copy)
    assert code == 0 and err == ""
    assert out == f"demo store {store_copy} exists; serving it (delete it to rebuild)\n"
    assert (_digest(store_copy), sorted(p.name for p in store_copy.parent.rglob("*"))) == before


def test_demo_organisms_with_a_store_names_the_organisms_it_lacks(capsys, store_copy):
    before = _digest(store_copy), sorted(p.name for p in store_copy.parent.rglob("*"))
    code, out, err = _cli(capsys, "demo", "--organisms", "--no-serve", "--store", store_copy)
    assert code == 0 and err == ""
    assert out == (f"demo store {store_copy} exists; serving it (delete it to rebuild; it lacks "
                   "efficientnet_lite0.bundled, efficientnet_lite1.bundled, efficientnet_lite2.bundled)\n")
    assert (_digest(store_copy), sorted(p.name for p in store_copy.parent.rglob("*"))) == before


def test_demo_builds_lite0_alone_or_the_three_organisms():
    from precompute.cli import DEMO_FEATUREVIS, demo_models
    from precompute.models import DEFAULT_MODEL, REGISTRY

    assert demo_models(False) == (DEFAULT_MODEL,)
    organisms = [REGISTRY[model_id] for model_id in demo_models(True)]
    assert [(spec.arch, spec.input_size) for spec in organisms] == [
        ("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
    assert all(spec.source == "bundled" for spec in organisms)
    for spec in organisms:  # the featurevis sample's layers exist in each (spec.layer raises otherwise)
        assert [spec.layer(layer).name for layer, _, _ in DEMO_FEATUREVIS] == ["blocks.3", "blocks.1"]


def test_executor_ray_without_ray_is_one_line(capsys, monkeypatch, tiny_factory, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    store = tmp_path / "s.duckdb"
    code, out, err = _cli(capsys, "precompute", f"{tiny_factory}:build", "--name", "tiny", "--input-size", 64,
                          "--max-images", 8, "--executor", "ray", "--store", store)
    assert code == 1 and out == ""
    assert err == "microscope: error: --executor ray needs Ray: pip install 'microscope[ray]'\n"
    assert not store.exists()


def test_precompute_inceptionv1_offline_without_its_weights_is_one_line(capsys, monkeypatch, store_copy, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MICROSCOPE_OFFLINE", "1")
    before, shards = _digest(store_copy), sorted(store_copy.parent.rglob("*"))
    code, out, err = _cli(capsys, "precompute", "inceptionv1", "--layers", "mixed4b,mixed4c", "--store", store_copy)
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "inception5h.pth"
    assert code != 0 and err == (f"microscope: error: the InceptionV1 weights are not at {weights} and downloads "
                                 "are off (MICROSCOPE_OFFLINE or HF_HUB_OFFLINE): fetch https://github.com/"
                                 "ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth and put the "
                                 "file there\n")
    assert _digest(store_copy) == before and sorted(store_copy.parent.rglob("*")) == shards


FAULTY_FACTORY = '''
from pathlib import Path

import torch
from torch import nn


class Strict(nn.Module):
    """Raises as timm's ViT does at an input it was not built for, in every pass over images, while the flag
    file exists; discovery and the receptive-field probe (no inference mode) go through."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 12, 1)

    def forward(self, x):
        if torch.is_inference_mode_enabled() and Path({flag!r}).exists():
            raise AssertionError("Input height (8) doesn't match model (64).")
        return self.conv(x)


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU()),
                         Strict(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))
'''


def test_an_error_inside_the_model_costs_only_its_layers_jobs_and_says_how_to_retry_them(capsys, tmp_path):
    flag = tmp_path / "strict"
    flag.touch()
    factory = tmp_path / "faulty.py"
    factory.write_text(FAULTY_FACTORY.format(flag=str(flag)))
    store = tmp_path / "s.duckdb"
    argv = ["precompute", f"{factory}:build", "--name", "faulty", "--input-size", "32", "--max-images", "16",
            "--k", "4", "--techniques", "stats,dataset,tuning,classes", "--store", str(store)]
    code, out, err = _cli(capsys, *argv)
    assert code == 1
    lines = err.strip().splitlines()
    failed = [line for line in lines if line.startswith("microscope: error: job ")]
    # Layers 3.conv, 3 (the strict block) and 6 (after it) lose every technique; 0, 2.0 and 2 lose only classes,
    # whose predictions need the whole model to run.
    bad, good = ("3.conv:0-11", "3:0-11", "6:0-4"), ("0:0-7", "2.0:0-11", "2:0-11")
    assert len(failed) == 15 and all("failed: AssertionError: Input height (8) doesn't match model (64)." in line
                                     for line in failed)
    assert {line.split("(")[1].split(")")[0].split("@")[1] for line in failed} == {
        f"{layer} {technique}" for layer in bad for technique in ("stats", "dataset", "tuning", "classes")} | {
        f"{layer} classes" for layer in good}
    assert "9 jobs run, 0 already done" in out
    code, out, _ = _cli(capsys, "info", "--json", "--store", store)
    computed = {layer["layer"]: layer["computed"]["stats"] for layer in json.loads(out)["models"][0]["layers"]}
    assert computed == {"0": 8, "2.0": 12, "2": 12, "3.conv": 0, "3": 0, "6": 0}
    retry = lines[-1].split("retry them with: ", 1)[1]
    assert retry.endswith("--layers 0,2.0,2,3.conv,3,6 --techniques classes,stats,dataset,tuning")
    flag.unlink()  # the model fixed: the retry runs the failed jobs, and skips the others as done
    code, out, err = _cli(capsys, *shlex.split(retry)[1:])
    assert code == 0, err
    assert "15 jobs run, 9 already done" in out
