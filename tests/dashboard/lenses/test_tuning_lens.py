"""The unit page's tuning lens, the tuning search and the gallery's tuning sorts, through AppTest on the
fixture store (tests/conftest.py; `all` techniques, so it holds tuning curves for every unit)."""

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_support import MODEL_ID, html, run, tiles

pytestmark = pytest.mark.app


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_tuning_lens_shows_curves_polar_heatmap_and_stimuli(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="tuning")
    figures = charts(at)
    kinds = [f["data"][0]["type"] for f in figures]
    assert kinds == ["scatter", "scatterpolar", "heatmap"]
    lines = figures[0]
    assert lines["layout"]["xaxis"]["title"]["text"] == "orientation (deg)"
    assert lines["layout"]["xaxis"]["ticksuffix"] == "°"
    assert len(lines["data"]) == 4 and lines["data"][0]["name"].startswith("frequency ")  # a line per frequency
    assert len(lines["data"][0]["x"]) == 12
    polar = figures[1]
    assert len(polar["data"][0]["theta"]) == 2 * 12 + 1  # orientation drawn at θ and θ + 180°, closed
    assert polar["layout"]["polar"]["angularaxis"]["direction"] == "counterclockwise"
    body = html(at)
    assert "half-max width" in body and "selectivity" in body and "orientation (deg)" in body
    images = at.get("image")
    assert len(images) == 2  # the best stimulus, then a sweep
    assert len(images[1].proto.imgs) == 8 and "→" in images[1].proto.imgs[0].caption


def test_family_in_the_url_picks_the_stimuli(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="tuning", family="colour")
    figures = charts(at)
    assert figures[0]["layout"]["xaxis"]["title"]["text"] == "hue (deg)"
    colours = figures[1]["data"][0]["marker"]["color"]
    assert colours[0] == "rgb(255, 0, 0)" and len(colours) == 25  # hue 0° is red; 24 hues, closed
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="tuning", family="curves")
    heat = charts(at)[2]
    assert heat["layout"]["xaxis"]["title"]["text"] == "orientation (deg)"
    assert heat["layout"]["yaxis"]["title"]["text"] == "radius (px)" and heat["data"][0]["z"]["shape"] == "4, 24"


def test_unknown_family_warns(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="tuning", family="plaid")
    assert "Unknown family `plaid`" in at.warning[0].value
    assert charts(at)[0]["layout"]["xaxis"]["title"]["text"] == "orientation (deg)"


def test_lens_without_tuning_says_how_to_compute_it(tmp_path, monkeypatch, app_store):
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    other = tmp_path / "no_tuning.duckdb"
    precompute(Request(model=f"{app_store.parent / 'tiny_app_model.py'}:build", store=other, layers="0",
                       techniques="stats", max_images=16, progress=False,
                       overrides=Overrides(name=MODEL_ID, input_size=64)))
    monkeypatch.setenv("MICROSCOPE_STORE", str(other))
    at = run("unit", model=MODEL_ID, layer="0", unit="1", view="tuning")
    assert "--techniques tuning" in at.info[0].value and not at.get("plotly_chart")


def test_search_finds_units_by_tuning_with_deep_links(store_env, app_store):
    from store.queries import Store

    expected = Store(app_store).find_tuned(MODEL_ID, "colour", "hue", 90, 270, 0.2, limit=100, min_relative=0.2)
    weak = Store(app_store).find_tuned(MODEL_ID, "colour", "hue", 90, 270, 0.2, limit=1000)
    assert len(weak) > len(expected)  # the default strength threshold leaves out barely-responding units
    assert expected, "the fixture store should hold some hue-tuned unit"
    at = run("search", model=MODEL_ID, by="colour.hue", lo="90", hi="270", sel="0.2")
    body = html(at)
    hrefs = re.findall(r'<a href="(unit\?[^"]+)"', body)
    assert [int(re.search(r"unit=(\d+)", h).group(1)) for h in hrefs] == [r["unit"] for r in expected]
    assert "view=tuning" in hrefs[0] and "family=colour" in hrefs[0]
    assert f"unit={expected[0]['unit']}" in hrefs[0]  # most selective first
    assert "preferred (deg)" in body
    every = run("search", model=MODEL_ID, by="colour.hue", lo="90", hi="270", sel="0.2", strength="0")
    assert len(re.findall(r'<a href="(unit\?[^"]+)"', html(every))) == min(len(weak), 100)
    none = run("search", model=MODEL_ID, by="colour.hue", lo="91", hi="92", sel="0")  # between grid hues
    assert not re.findall(r'<a href="(unit\?[^"]+)"', html(none))


def test_gallery_sorts_by_orientation_selectivity(store_env, app_store):
    from store.queries import Store

    frame = Store(app_store).layer_tuning(MODEL_ID, "2")
    best = frame.sort_values(["gratings_orientation_sel", "unit"], ascending=[False, True])["unit"].tolist()
    at = run("layer", model=MODEL_ID, layer="2", sort="-gratings_orientation_sel")
    assert tiles(at) == best
    threshold = float(frame["gratings_orientation_sel"].median())
    at = run("layer", model=MODEL_ID, layer="2", sort="-gratings_orientation_sel", min_sel=f"{threshold:.2f}")
    assert tiles(at) == [u for u in best if frame.set_index("unit").loc[u, "gratings_orientation_sel"]
                         >= float(f"{threshold:.2f}")]
