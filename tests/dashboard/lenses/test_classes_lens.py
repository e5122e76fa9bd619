"""The class-vote lens, the layer gallery's vote column and the search for units that vote for a class, through
AppTest: on the fixture store (tests/conftest.py: default techniques, so class votes for a 200-class head with
no class names), on a gated two-class model (a path that is not linear), and on the bundled model's head
(ImageNet's names: "espresso")."""

import re
from urllib.parse import parse_qs

import pytest

from tests.app_support import MODEL_ID, html, run, texts
from tests.precompute.techniques.test_classes import TWO_CLASS_FACTORY

pytestmark = pytest.mark.app

NAMES = re.compile(r'<td class="name" title="([^"]+)">')
RESULT = re.compile(r'<td><a href="unit\?([^"]+)" target="_self">')


def result_links(at) -> list[dict]:
    """The links of the class-vote search's table (the one with an "its vote" column)."""
    table = next((h.value for h in at.html if ">its vote</th>" in h.value), "")
    return [{k: v[-1] for k, v in parse_qs(q.replace("&amp;", "&")).items()} for q in RESULT.findall(table)]


def test_lens_shows_the_stored_votes_and_predictions_strongest_first(store_env, app_store):
    from store.queries import Store

    stored = Store(app_store).classes_record(MODEL_ID, "2", 3)
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="classes")
    assert [s.value for s in at.subheader] == ["Raises", "Lowers", "Predicted on its top images"]
    expected = [f"class {v['index']}" for v in stored["up"] + stored["down"] + stored["predicted"]]
    assert NAMES.findall(html(at)) == expected and len(stored["up"]) == len(stored["down"]) == 10
    weights = [v["weight"] for v in stored["up"]]
    assert weights == sorted(weights, reverse=True) and weights[0] > 0 > stored["down"][0]["weight"]
    assert f"{stored['up'][0]['weight']:+.3g}" in html(at)
    captions = texts(at)
    assert "the change in each class's logit when this unit's whole map rises by 1" in captions.lower()
    assert "ReLUs taken as identity and batch norm folded" in captions
    assert "no class names: classes are shown by index (0 to 199)" in captions


def test_layer_gallery_names_each_units_strongest_vote(store_env, app_store):
    from store.queries import Store

    votes = Store(app_store).layer_votes(MODEL_ID, "2")
    at = run("layer", model=MODEL_ID, layer="2")
    shown = re.findall(r'href="unit\?[^"]*?unit=(\d+)"[^>]*>.*?<div class="ms-vote">↑ ([^<]+)</div>', html(at))
    assert [(int(u), name) for u, name in shown] == [(u, f"class {votes[u]['index']}") for u in range(16)]


def test_search_lists_the_units_that_vote_for_a_class(store_env, app_store):
    from store.queries import Store

    wanted = Store(app_store).layer_votes(MODEL_ID, "2")[5]["index"]
    for at in (run("search", q=f"class:{wanted}"), run("search", votes=str(wanted))):
        found = result_links(at)
        assert found and all(link["view"] == "classes" and link["model"] == MODEL_ID for link in found)
        assert {"layer": "2", "unit": "5"} in [{k: link[k] for k in ("layer", "unit")} for link in found]
        assert f"class {wanted}" in html(at) and "most distinctive first" in texts(at)
    nothing = run("search", votes="no such class")
    assert nothing.info and "No unit's stored votes name a class matching 'no such class'" in nothing.info[0].value


def class_store(folder, factory_source: str, name: str):
    """A store of class votes (16 sample images) for the model that `factory_source`'s build() returns."""
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    factory = folder / f"{name}.py"
    factory.write_text(factory_source)
    store = folder / "s.duckdb"
    precompute(Request(model=f"{factory}:build", store=store, techniques="classes", max_images=16, k=4,
                       progress=False, overrides=Overrides(name=name, input_size=32)))
    return store


def test_lens_says_why_a_gated_layer_has_no_votes(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_STORE", str(class_store(tmp_path, TWO_CLASS_FACTORY, "two")))
    gated = run("unit", model="two", layer="stem", unit="0", view="classes")
    assert gated.warning and gated.warning[0].value.startswith("No class votes for this layer: not a linear path: "
                                                               "sigmoid in the model bends the activations")
    body = run("unit", model="two", layer="body", unit="0", view="classes")
    assert not body.warning and NAMES.findall(html(body))[:2] == ["class 0", "class 1"]  # up: 0 (+2); down: 1 (-3)


# Every unit of layer "0" feeds layer "2" positively, and class 0's head weights are large and positive on every
# unit of "2": whatever a unit of "0" does, its strongest vote is class 0, the path's, not the unit's.
CONCENTRATED_FACTORY = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        model[2].weight.copy_(torch.rand(8, 8, 1, 1) + 0.5)
        model[6].weight.uniform_(-0.1, 0.1)
        model[6].weight[0] = 5.0
    return model
'''


def test_a_layer_whose_units_all_vote_for_one_class_says_it_is_the_paths_doing(tmp_path, monkeypatch, app_store):
    monkeypatch.setenv("MICROSCOPE_STORE", str(class_store(tmp_path, CONCENTRATED_FACTORY, "conc")))
    line = "8 of 8 units of this layer vote most for the same class (class 0)"
    assert any(c.value.startswith(line) for c in run("layer", model="conc", layer="0").caption)
    assert any(w.value.startswith(line) for w in run("unit", model="conc", layer="0", unit="3", view="classes").warning)
    monkeypatch.setenv("MICROSCOPE_STORE", str(app_store))  # votes that differ from unit to unit: no such line
    assert not any("vote most for the same class" in c.value for c in run("layer", model=MODEL_ID, layer="2").caption)


@pytest.fixture(scope="module")
def lite0_store(tmp_path_factory):
    from precompute.pipeline import precompute
    from precompute.request import Request

    store = tmp_path_factory.mktemp("lite0") / "s.duckdb"
    precompute(Request(model="efficientnet_lite0.bundled", store=store, layers="conv_head", techniques="classes",
                       max_images=8, k=4, progress=False))
    return store


@pytest.mark.integration
def test_votes_for_espresso_match_imagenet_names_as_whole_words(lite0_store, monkeypatch):
    from store.queries import Store

    reader = Store(lite0_store)
    found = reader.find_voters("espresso")
    assert found and {r["label"] for r in found} == {"espresso", "espresso maker"}
    assert [r["z"] for r in found] == sorted((r["z"] for r in found), reverse=True)
    assert {r["label"] for r in reader.find_voters("Espresso maker")} == {"espresso maker"}
    assert all("cat" in r["label"].split() for r in reader.find_voters("cat"))  # not "catamaran"
    monkeypatch.setenv("MICROSCOPE_STORE", str(lite0_store))
    at = run("search", q="class:espresso")
    assert len(result_links(at)) == len(found) and "espresso maker" in html(at)
    lens = run("unit", model="efficientnet_lite0.bundled", layer="conv_head", unit=str(found[0]["unit"]),
               view="classes")
    assert found[0]["label"] in NAMES.findall(html(lens))[0]
