"""The dictionary's pages through AppTest: a base layer links to its dictionary and shows its quality and
stability; a feature's unit page opens by a deep link whose layer name holds '/', and shows what it reads."""

from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.app_support import html, links, run

pytestmark = pytest.mark.app
MODEL = "planted"
FEATURES = "2/topk8x"


@pytest.fixture(scope="module")
def dictionary_store(tmp_path_factory):
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    folder = tmp_path_factory.mktemp("dictionary_app")
    factory = folder / "planted.py"
    here = Path(__file__).resolve().parents[1] / "precompute" / "techniques"
    factory.write_text(f"import sys\nsys.path.insert(0, {str(here)!r})\nfrom test_dictionary import planted as build\n")
    store = folder / "d.duckdb"
    precompute(Request(model=f"{factory}:build", store=store, layers="2", techniques="stats,dataset,dictionary",
                       max_images=100, k=4, progress=False, options={"dict_k": 2},
                       overrides=Overrides(name=MODEL, input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)))
    return store


@pytest.fixture
def env(dictionary_store, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_STORE", str(dictionary_store))


def test_base_layer_page_links_its_dictionary_with_quality_and_stability(env):
    at = run("layer", model=MODEL, layer="2")
    assert "Dictionaries of this layer" in [s.value for s in at.subheader]
    assert links(at)[f"{FEATURES}: 32 features"] == {"model": MODEL, "layer": FEATURES}
    table = at.dataframe[0].value
    assert list(table["dictionary"]) == [FEATURES] and 0 < table["explained variance"].iloc[0] <= 1
    assert any("best decoder cosine in the seed-1 dictionary" in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart")) == 1, at  # its distribution


def test_feature_deep_link_opens_and_shows_what_it_reads(env):
    assert "layer=2%2Ftopk8x" in urlencode({"layer": FEATURES})
    at = run("unit", model=MODEL, layer=FEATURES, unit="3", view="dictionary")
    assert at.header[0].value == f"{MODEL}@{FEATURES}:3"
    body = html(at)
    assert "unit?model=planted&amp;layer=2&amp;unit=" in body  # the channels it reads, each a link
    assert "Channels of 2 it reads most" in [s.value for s in at.subheader]
    assert "one feature of a sparse dictionary of its base layer" in at.caption[0].value


def test_neuron_page_lists_the_features_that_read_it(env):
    at = run("unit", model=MODEL, layer="2", unit="0", view="dictionary")
    assert "Features that read this neuron" in [s.value for s in at.subheader]
    assert "one channel of its activation map" in at.caption[0].value
    assert "layer=2%2Ftopk8x" in html(at)
