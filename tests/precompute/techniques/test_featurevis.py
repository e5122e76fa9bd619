"""The featurevis technique through the pipeline: stored images, achieved activations, JSON, the lens."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from precompute.cli import main
from precompute.models import Overrides
from precompute.optvis.errors import RenderError
from precompute.pipeline import precompute
from precompute.request import Request
from store.queries import Store
from tests.app_support import APP

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fv_store(tmp_path_factory, tiny_factory) -> Path:
    store = tmp_path_factory.mktemp("fv") / "s.duckdb"
    precompute(Request(model=f"{tiny_factory}:build", store=store, layers="2.0", units="0-2",
                       techniques="stats,featurevis", max_images=32, progress=False,
                       options={"steps": 24, "size": 32}, overrides=Overrides(name="tiny", input_size=64)))
    return store


def test_every_unit_gets_each_objective_and_its_facets(fv_store):
    store = Store(fv_store)
    for unit in range(3):
        rows = store.unit_featurevis("tiny", "2.0", unit)
        assert [(r["technique"], r["facet"]) for r in rows] == [
            ("channel", 0), ("channel", 1), ("neuron", 0), ("negative", 0), ("diversity", 0), ("diversity", 1),
            ("diversity", 2), ("diversity", 3)]
        assert all(r["image"][:4] == b"RIFF" and r["params"]["steps"] == 24 for r in rows)
        # The quick preset's half-side window of a 64 px input is under MIN_WINDOW_PX: the steps saw the whole view
        assert all(r["params"]["window"] is None for r in rows)
    assert sorted(store.thumbnails("tiny", "2.0", [0, 1, 2, 3], "channel")) == [0, 1, 2]
    visuals = store.layer_visuals("tiny", "2.0")
    assert [v["technique"] for v in visuals] == ["deepdream", "caricature", "caricature", "caricature"]
    assert visuals[1]["source"] == "skimage.coffee" and visuals[1]["source_image"]


def test_a_gallery_run_renders_the_channel_pictures_and_the_layer_visuals_alone(tiny_factory, tmp_path):
    store = tmp_path / "g.duckdb"
    precompute(Request(model=f"{tiny_factory}:build", store=store, layers="2.0", units="0-1",
                       techniques="featurevis", max_images=8, progress=False,
                       options={"steps": 8, "size": 32, "gallery": True},
                       overrides=Overrides(name="tiny", input_size=64)))
    reader = Store(store)
    for unit in range(2):
        rows = reader.unit_featurevis("tiny", "2.0", unit)
        assert [(r["technique"], r["facet"]) for r in rows] == [("channel", 0), ("channel", 1)]
        assert rows[0]["params"]["objectives"] == ["channel"]
    assert sorted(reader.thumbnails("tiny", "2.0", [0, 1, 2], "channel")) == [0, 1]
    assert [v["technique"] for v in reader.layer_visuals("tiny", "2.0")] == ["deepdream"] + ["caricature"] * 3


def test_channel_render_drives_the_unit_higher_than_the_negative_render(fv_store):
    """Both objectives were optimised, in opposite directions: the negative score is minus the activation."""
    store = Store(fv_store)
    for unit in range(3):
        rows = {r["technique"]: r for r in store.unit_featurevis("tiny", "2.0", unit)}
        assert rows["channel"]["achieved_activation"] > -rows["negative"]["achieved_activation"]


def test_unit_json_lists_featurevis(capsys, fv_store):
    assert main(["unit", "tiny", "2.0", "1", "--json", "--store", str(fv_store)]) == 0
    record = json.loads(capsys.readouterr().out)
    techniques = {(f["technique"], f["facet"]) for f in record["featurevis"]}
    assert ("channel", 0) in techniques and ("diversity", 3) in techniques
    assert all("achieved_activation" in f and f["params"]["preset"] == "quick" for f in record["featurevis"])


def test_unit_images_writes_every_stored_image(capsys, fv_store, tmp_path):
    assert main(["unit", "tiny", "2.0", "1", "--json", "--images", str(tmp_path), "--store", str(fv_store)]) == 0
    listed = json.loads(capsys.readouterr().out)["images"]
    assert [(i["technique"], i["facet"]) for i in listed] == [
        ("channel", 0), ("channel", 1), ("neuron", 0), ("negative", 0), *[("diversity", f) for f in range(4)],
        ("deepdream", 0), ("caricature", 1), ("caricature", 2), ("caricature", 3)]
    assert listed[-1]["source"] == "skimage.astronaut"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(i["path"]).name for i in listed)
    assert all(Path(i["path"]).read_bytes()[:4] == b"\x89PNG" for i in listed)


def test_bad_preset_and_steps(tiny_factory, tmp_path, capsys):
    with pytest.raises(RenderError, match="unknown preset 'huge'"):
        precompute(Request(model=f"{tiny_factory}:build", store=tmp_path / "s.duckdb", techniques="featurevis",
                           options={"preset": "huge"}, progress=False, overrides=Overrides(name="t", input_size=64)))
    with pytest.raises(SystemExit):
        main(["precompute", "efficientnet_lite0.bundled", "--techniques", "featurevis", "--steps", "0"])
    assert "expected a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["precompute", "efficientnet_lite0.bundled", "--techniques", "featurevis", "--window", "0"])
    assert "expected a fraction in (0, 1], got '0'" in capsys.readouterr().err


@pytest.mark.app
def test_featurevis_lens_and_layer_visuals(fv_store, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_STORE", str(fv_store))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("app_pages/unit.py")
    for k, v in {"model": "tiny", "layer": "2.0", "unit": "1", "view": "featurevis"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception
    assert [s.value for s in at.subheader] == ["Channel", "Neuron", "Negative", "Diversity"]
    assert sum(h.value.count("<img") for h in at.html) == 8
    assert "seed 2" in " ".join(h.value for h in at.html)  # the second seed's channel picture, labelled
    trust = [c.value for c in at.caption if c.value.startswith("How far to trust it")]
    assert len(trust) == 1 and "top dataset example" in trust[0] and "two seeds" in trust[0], trust
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("app_pages/layer.py")
    at.query_params["model"], at.query_params["layer"] = "tiny", "2.0"
    at.run()
    assert not at.exception
    assert "DeepDream and caricatures" in [s.value for s in at.subheader]
