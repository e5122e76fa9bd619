"""The unit page's circuit lens and the layer page's weight matrix, through AppTest on the fixture store
(tests/conftest.py: default techniques, so circuits for layers "0" (8 units), "2" (16) and "6" (200))."""

import json
import re
from urllib.parse import parse_qs, unquote

import numpy as np
import pytest

from dashboard.circuit_matrix import family_order
from tests.app_support import MODEL_ID, html, links, run

pytestmark = pytest.mark.app

TILE = re.compile(r'<a class="ms-nb" href="unit\?([^"]+)"[^>]*title="([^"]+)">')


def neighbour_tiles(at) -> list[tuple[dict, str]]:
    return [({k: v[-1] for k, v in parse_qs(q.replace("&amp;", "&")).items()}, unquote(title))
            for q, title in TILE.findall(html(at))]


def test_lens_shows_input_and_output_neighbours_as_in_the_store(store_env, app_store):
    from store.queries import Store

    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="circuits")
    stored = Store(app_store).circuits_record(MODEL_ID, "2", 3)
    subheaders = [s.value for s in at.subheader]
    assert subheaders == ["Inputs from 0: adjacent layer", "Outputs into 6"]
    tiles = neighbour_tiles(at)
    inputs = [t for t in tiles if t[0]["layer"] == "0"]
    outputs = [t for t in tiles if t[0]["layer"] == "6"]
    assert {int(q["unit"]) for q, _ in inputs} == {n["unit"] for n in stored["inputs"]}
    assert {int(q["unit"]) for q, _ in outputs} == {n["unit"] for n in stored["outputs"]}
    assert len(outputs) == 32  # 16 excitatory and 16 inhibitory of 200
    for query, title in tiles:  # each links to the neighbour's circuits, with the way back to this unit
        assert query["model"] == MODEL_ID and query["view"] == "circuits" and query["came"] == "2:3"
    strongest = max(stored["inputs"], key=lambda n: n["weight"])
    assert f"0:{strongest['unit']} · weight {strongest['weight']:+.3g}" in [t for _, t in inputs][0]
    assert html(at).count('class="ms-kernel"') == len(tiles)
    assert "rgb(178, 24, 43)" in html(at) and "rgb(33, 102, 172)" in html(at)  # both signs coloured


def test_neighbour_page_links_back_and_source_choice_lives_in_the_url(store_env):
    at = run("unit", model=MODEL_ID, layer="6", unit="7", view="circuits", came="2:3")
    assert links(at)[f"Back to {MODEL_ID}@2:3"] == {"model": MODEL_ID, "layer": "2", "unit": "3", "view": "circuits"}
    assert [s.value for s in at.subheader][0] == "Inputs from 2: adjacent layer"
    assert at.selectbox[0].value == "2"
    at.selectbox[0].select("0").run()
    assert at.query_params["source"] == "0"
    assert [s.value for s in at.subheader] == ["Inputs from 0: expanded weights, 2 layers back"]
    assert "cut to 11×11" in "\n".join(c.value for c in at.caption)  # the 31x31 kernels are drawn cut
    deep = run("unit", model=MODEL_ID, layer="6", unit="7", view="circuits", source="0")
    assert [s.value for s in deep.subheader] == ["Inputs from 0: expanded weights, 2 layers back"]
    assert links(deep)["Next unit"]["source"] == "0"  # prev/next keep the source layer


def test_bad_came_and_source_values_give_messages(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="circuits", came="9:zz", source="nope")
    warnings = [w.value for w in at.warning]
    assert any("Unknown unit `9:zz`" in w for w in warnings)
    assert any("Unknown source `nope`" in w for w in warnings)
    assert [s.value for s in at.subheader][0] == "Inputs from 0: adjacent layer"


def test_first_layer_has_outputs_only(store_env):
    at = run("unit", model=MODEL_ID, layer="0", unit="2", view="circuits")
    assert [s.value for s in at.subheader] == ["Outputs into 2"]
    assert "first layer" in "\n".join(c.value for c in at.caption)


def test_layer_page_weight_matrix_sorts(store_env, app_store):
    from store.queries import Store

    at = run("layer", model=MODEL_ID, layer="2")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    heat = figure["data"][0]
    assert heat["type"] == "heatmap" and len(heat["y"]) == 16 and len(heat["x"]) == 8
    frame = Store(app_store).circuit_matrix(MODEL_ID, "2", "0")
    assert heat["y"] == [str(u) for u in range(16)]
    at = run("layer", model=MODEL_ID, layer="2", wsort="strongest")
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    weights = np.stack(frame["weights"].to_numpy())
    argmax = [int(weights[int(u)].argmax()) for u in heat["y"]]
    assert argmax == sorted(argmax) and sorted(heat["y"], key=int) == [str(u) for u in range(16)]
    big = run("layer", model=MODEL_ID, layer="6", wsource="0", wsort="family")
    heat = json.loads(big.get("plotly_chart")[0].proto.spec)["data"][0]
    assert len(heat["y"]) == 200 and len(heat["x"]) == 8 and sorted(map(int, heat["y"])) == list(range(200))
    # The page's (cached) family order is family_order of the stored matrix, rows and columns.
    frame = Store(app_store).circuit_matrix(MODEL_ID, "6", "0")
    weights = np.stack(frame["weights"].to_numpy()).astype(np.float32)
    assert heat["y"] == [str(u) for u in frame["unit"].to_numpy()[family_order(weights)]]
    assert heat["x"] == [str(c) for c in family_order(weights.T)]
