"""Every page of the dashboard through AppTest, on a store built by the real pipeline (tests/conftest.py)."""

import os
import re
import shutil
from urllib.parse import urlencode

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_support import APP, LAYERS, MODEL_ID, ROOT, html, links, run, texts, tiles

pytestmark = pytest.mark.app

# ---- pages ---------------------------------------------------------------------------------------------------


def test_models_page_has_a_card_per_model(store_env):
    at = run()
    assert [s.value for s in at.subheader] == [MODEL_ID]
    assert "factory" in html(at) and "circuits, classes, dataset, similar, stats, tuning" in html(at)
    assert links(at)[f"Browse {MODEL_ID}"] == {"model": MODEL_ID}


def test_model_page_lists_layers_in_order_with_encoded_links(store_env):
    at = run("model", model=MODEL_ID)
    body = html(at)
    assert at.title[0].value == MODEL_ID
    hrefs = re.findall(r'<a href="(layer\?[^"]+)"', body)
    query = urlencode({"model": MODEL_ID}).replace("&", "&amp;")
    assert hrefs == [f"layer?{query}&amp;layer={name}" for name in LAYERS]  # id is URL-encoded, layers in order
    assert "31×31" in body and "1 / 8" not in body and ">200<" in body


def test_layer_gallery_paginates_128_per_page(store_env):
    first = run("layer", model=MODEL_ID, layer="6")
    assert tiles(first) == list(range(128))
    second = run("layer", model=MODEL_ID, layer="6", page="2")
    assert tiles(second) == list(range(128, 200))
    assert 'src="data:image/webp;base64,' in html(second)


def test_layer_gallery_sorts_and_filters_from_the_url(store_env, app_store):
    from store.queries import Store

    units = Store(app_store).layer_units(MODEL_ID, "2")
    by_max = units.sort_values(["max", "unit"], ascending=[False, True])["unit"].tolist()
    at = run("layer", model=MODEL_ID, layer="2", sort="-max")
    assert tiles(at) == by_max
    by_min = units.sort_values(["max", "unit"], ascending=[True, True])["unit"].tolist()
    assert tiles(run("layer", model=MODEL_ID, layer="2", sort="max")) == by_min

    assert 0 in tiles(run("layer", model=MODEL_ID, layer="0"))
    alive = tiles(run("layer", model=MODEL_ID, layer="0", hide_dead="true"))
    assert 0 not in alive and len(alive) == LAYERS["0"] - 1

    threshold = 0.999
    expected = sorted(units.loc[units["frac_positive"] >= threshold, "unit"].tolist())
    assert tiles(run("layer", model=MODEL_ID, layer="2", min_pos=str(threshold))) == expected
    assert len(expected) < LAYERS["2"]  # the filter really removed something


def test_layer_gallery_sort_follows_every_change(store_env, app_store):
    """Each pick reaches the page and the URL, the second one too (a widget remade from the URL on every
    change would drop every other pick)."""
    from store.queries import Store

    units = Store(app_store).layer_units(MODEL_ID, "2")
    at = run("layer", model=MODEL_ID, layer="2")
    for sort, column, ascending in (("-max", "max", False), ("max", "max", True), ("-mean", "mean", False)):
        at.selectbox[0].select(sort).run()
        assert at.query_params["sort"] == sort
        assert tiles(at) == units.sort_values([column, "unit"], ascending=[ascending, True])["unit"].tolist()
    at.selectbox[0].select("unit").run()
    assert "sort" not in at.query_params and tiles(at) == list(range(LAYERS["2"]))


def test_layer_gallery_bad_sort_warns_and_falls_back(store_env):
    at = run("layer", model=MODEL_ID, layer="2", sort="name; DROP TABLE layers")
    assert at.warning and "Unknown sort" in at.warning[0].value
    assert tiles(at) == list(range(LAYERS["2"]))


def test_unit_page_dataset_lens(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="3")
    assert at.header[0].value == f"{MODEL_ID}@2:3"
    blocks = [h.value for h in at.html if '<div class="ms-ex-grid">' in h.value]
    assert [b.count("<img") for b in blocks] == [16, 16, 11]
    assert "q99" in blocks[2]  # quantile captions
    assert at.code[0].value == f"http://localhost:8501/unit?{urlencode({'model': MODEL_ID, 'layer': '2', 'unit': 3})}"
    nav = links(at)
    assert nav["Previous unit"]["unit"] == "2" and nav["Next unit"]["unit"] == "4"
    assert nav["All units of 2"] == {"model": MODEL_ID, "layer": "2"}


def test_unit_page_sends_the_stored_images_as_they_are_with_their_boxes(store_env, app_store):
    """No decoding or re-encoding on the server: each tile is the stored image, placed so that its box fills the
    tile (the browser test checks what is drawn)."""
    import base64

    from store import pictures
    from store.queries import Store

    held = Store(app_store)
    rows = held.unit_examples(MODEL_ID, "2", 3)
    held.close()
    top = next(h.value for h in run("unit", model=MODEL_ID, layer="2", unit="3").html if "ms-ex-grid" in h.value)
    sources = re.findall(r'<div class="ms-crop"><img src="data:image/webp;base64,([^"]+)"[^>]* style="([^"]+)"', top)
    assert [base64.b64decode(src) for src, _ in sources] == [r["image"] for r in rows if r["kind"] == "top"]
    for (_, style), row in zip(sources, rows):
        left, upper, right, lower = row["box"]
        width, height = pictures.image_size(row["image"])
        side_x, side_y = right - left, lower - upper
        assert style == (f"left: {-100 * left / side_x:.3f}%; top: {-100 * upper / side_y:.3f}%; "
                         f"width: {100 * width / side_x:.3f}%; height: {100 * height / side_y:.3f}%")


def test_unit_page_first_unit_has_no_previous(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="0")
    prev = next(p for p in at.get("page_link") if p.value == "Previous unit")
    nxt = next(p for p in at.get("page_link") if p.value == "Next unit")
    assert prev.proto.disabled and not nxt.proto.disabled


def test_unit_page_heatmap_toggle_changes_the_pictures(store_env):
    with_heat = [h.value for h in run("unit", model=MODEL_ID, layer="2", unit="3").html
                 if '<div class="ms-ex-grid">' in h.value]
    without = [h.value for h in run("unit", model=MODEL_ID, layer="2", unit="3", heat="false").html
               if '<div class="ms-ex-grid">' in h.value]
    assert with_heat[0] != without[0]  # top crops are tinted only with heat
    assert with_heat[2] == without[2]  # quantile crops never have heat


def test_unit_page_stats_lens(store_env):
    at = run("unit", model=MODEL_ID, layer="6", unit="7", view="stats")
    assert [s.value for s in at.subheader] == ["Activation histogram", "Statistics", "Provenance"]
    chart = at.get("plotly_chart")
    assert len(chart) == 1
    spec = chart[0].proto.spec
    assert '"type":"log"' in spec.replace(" ", "") and "spatial-max activation" in spec and "images (log)" in spec
    assert "fraction of images &gt; 0" in html(at) and "dead (same response to every image)" in html(at)
    frame = at.dataframe[0].value
    assert sorted(frame["technique"]) == ["circuits", "classes", "dataset", "similar", "stats", "tuning"]
    assert at.code[0].value.endswith("&view=stats")


def test_unknown_view_warns_and_shows_dataset_examples(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="1", view="nonsense")
    assert "Unknown view" in at.warning[0].value
    assert any('<div class="ms-ex-grid">' in h.value for h in at.html)


def test_embed_view_has_no_chrome(store_env):
    full = run("unit", model=MODEL_ID, layer="2", unit="3")
    assert len(full.sidebar.children) > 0
    at = run("unit", model=MODEL_ID, layer="2", unit="3", embed="1")
    assert at.header[0].value == f"{MODEL_ID}@2:3"
    assert not at.get("page_link") and not at.code  # no prev/next, breadcrumbs or deep-link box
    assert not any(getattr(c, "children", None) or getattr(c, "value", None) for c in at.sidebar.children)
    assert "Open in Microscope" in texts(at)
    assert any('header[data-testid="stHeader"]' in h.value for h in at.html)
    assert sum(h.value.count("<img") for h in at.html) == 43


@pytest.mark.parametrize("params, message, back", [
    ({"model": "nope"}, "Unknown model `nope`", "All models"),
    ({"model": "x' OR 1=1 --", "layer": "2", "unit": "1"}, "Unknown model `x' OR 1=1 --`", "All models"),
    ({"layer": "2", "unit": "1"}, "No model given", "All models"),
    ({"model": MODEL_ID, "layer": "blocks.9", "unit": "1"}, "Unknown layer `blocks.9`", f"Layers of {MODEL_ID}"),
    ({"model": MODEL_ID, "layer": "2' OR '1'='1", "unit": "1"}, "Unknown layer", f"Layers of {MODEL_ID}"),
    ({"model": MODEL_ID, "layer": "2", "unit": "abc"}, "Bad unit `abc`", "All units of 2"),
    ({"model": MODEL_ID, "layer": "2", "unit": "-1"}, "Bad unit `-1`", "All units of 2"),
    ({"model": MODEL_ID, "layer": "2", "unit": "1.5"}, "Bad unit `1.5`", "All units of 2"),
    ({"model": MODEL_ID, "layer": "2", "unit": "99999"}, "Unit 99999 is out of range", "All units of 2"),
    ({"model": MODEL_ID, "layer": "2", "unit": "16"}, "units 0 to 15", "All units of 2"),
    ({"model": MODEL_ID, "layer": "2"}, "No unit given", "All units of 2"),
    ({"model": MODEL_ID, "layer": "2", "unit": "1 OR 1=1"}, "Bad unit", "All units of 2"),
])
def test_bad_unit_params_give_a_message_and_a_way_back(store_env, params, message, back):
    at = run("unit", **params)
    assert len(at.error) == 1 and message in at.error[0].value
    assert back in links(at)
    assert not at.header  # the page stopped before drawing a unit


@pytest.mark.parametrize("page, params, message", [
    ("model", {"model": "nope"}, "Unknown model"),
    ("model", {}, "No model given"),
    ("layer", {"model": MODEL_ID, "layer": "x' OR 1=1 --"}, "Unknown layer"),
    ("layer", {"model": MODEL_ID}, "No layer given"),
])
def test_bad_model_and_layer_params(store_env, page, params, message):
    at = run(page, **params)
    assert len(at.error) == 1 and message in at.error[0].value


def test_missing_store_says_how_to_build_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_STORE", str(tmp_path / "absent.duckdb"))
    at = run("unit", model=MODEL_ID, layer="2", unit="1")
    assert "No Microscope store" in at.error[0].value and "absent.duckdb" in at.error[0].value
    commands = [c.value for c in at.code]
    assert "make demo" in commands and "microscope precompute efficientnet_lite0.bundled" in commands
    assert not at.header


def test_default_store_path_is_relative_to_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("MICROSCOPE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    at = run()
    assert "data/microscope.duckdb" in at.error[0].value


def test_corrupt_store_shows_the_store_error(tmp_path, monkeypatch):
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a duckdb file" * 100)
    monkeypatch.setenv("MICROSCOPE_STORE", str(bad))
    at = run()
    assert "cannot open store" in at.error[0].value


def test_a_replaced_store_file_is_noticed(tmp_path, monkeypatch, app_store):
    """ingest replaces the file atomically; the next page run must read the new file, not DuckDB's open copy."""
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    path = tmp_path / "live.duckdb"
    shutil.copy(app_store, path)
    monkeypatch.setenv("MICROSCOPE_STORE", str(path))
    assert [s.value for s in run().subheader] == [MODEL_ID]
    assert tiles(run("layer", model=MODEL_ID, layer="0"))

    other = tmp_path / "build" / "other.duckdb"
    precompute(Request(model=f"{app_store.parent / 'tiny_app_model.py'}:build", store=other, layers="0",
                       max_images=8, progress=False, overrides=Overrides(name="replacement", input_size=64)))
    os.replace(other, path)
    assert [s.value for s in run().subheader] == ["replacement"]
    at = run("layer", model=MODEL_ID, layer="0")
    assert "Unknown model" in at.error[0].value

    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"garbage" * 1000)
    os.replace(garbage, path)
    at = run()
    assert at.error and "cannot open store" in at.error[0].value


# ---- search --------------------------------------------------------------------------------------------------


def search(text: str, **params) -> AppTest:
    at = run("search", **params)
    at.text_input[0].input(text)
    at.form_submit_button[0].click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_search_layer_colon_unit_jumps_to_the_unit(store_env):
    at = search("2:5")
    assert at.header[0].value == f"{MODEL_ID}@2:5"
    assert at.query_params["unit"] == "5" and at.query_params["model"] == MODEL_ID


def test_search_full_id_jumps_to_the_unit(store_env):
    at = search(f"{MODEL_ID}@6:199")
    assert at.header[0].value == f"{MODEL_ID}@6:199"


def test_search_layer_alone_opens_the_gallery(store_env):
    at = search("0")
    assert at.title[0].value == f"{MODEL_ID}@0" and len(tiles(at)) == LAYERS["0"]


@pytest.mark.parametrize("text, message", [
    ("2:abc", "Bad unit"),
    ("2:16", "out of range"),
    ("b3:1", "No layer `b3`"),
    ("other@2:1", "Unknown model `other`"),
    ("", "Type a unit"),
])
def test_search_bad_input_explains(store_env, text, message):
    at = search(text)
    assert at.title[0].value == "Search"
    assert at.error and message in at.error[0].value


def test_search_query_in_the_url_shows_a_link(store_env):
    at = run("search", q="2:4")
    assert links(at)[f"{MODEL_ID}@2:4"] == {"model": MODEL_ID, "layer": "2", "unit": "4"}


def test_search_split_keeps_model_ids_with_at_and_colon():
    from dashboard.search import split

    assert split("hf-hub:timm/resnet50.a1_in1k@main@layer4.2:17") == ("hf-hub:timm/resnet50.a1_in1k@main",
                                                                     "layer4.2", "17")
    assert split("b3:12") == (None, "b3", "12")
    assert split("blocks.3") == (None, "blocks.3", None)


def test_layers_resolve_by_alias(monkeypatch):
    from dashboard import data

    rows = [{"layer": "conv_stem", "alias": "stem"}, {"layer": "blocks.3", "alias": "b3"}]
    monkeypatch.setattr(data, "layers", lambda key, model_id: rows)
    assert data.layer(None, "m", "b3")["layer"] == "blocks.3"
    assert data.layer(None, "m", "blocks.3")["layer"] == "blocks.3"
    assert data.layer(None, "m", "b4") is None


def test_prev_next_keep_the_lens_and_heat_switch(store_env):
    nav = links(run("unit", model=MODEL_ID, layer="2", unit="3", view="stats"))
    assert nav["Next unit"] == {"model": MODEL_ID, "layer": "2", "unit": "4", "view": "stats"}
    nav = links(run("unit", model=MODEL_ID, layer="2", unit="3", heat="false"))
    assert nav["Previous unit"] == {"model": MODEL_ID, "layer": "2", "unit": "2", "heat": "false"}


def test_lens_registry_is_the_only_place_that_names_lenses():
    from dashboard.lenses import DEFAULT, LENSES, Lens

    assert list(LENSES) == ["dataset", "featurevis", "stats", "tuning", "circuits", "similar",
                           "classes", "dictionary"] and DEFAULT in LENSES
    for name, lens in LENSES.items():
        assert isinstance(lens, Lens) and lens.NAME == name and lens.LABEL and callable(lens.render)
    assert LENSES["dataset"].KEEP == ("heat",) and LENSES["circuits"].KEEP == ("source",)
    page = (ROOT / "app_pages" / "unit.py").read_text()
    for name, lens in LENSES.items():  # the unit page has no per-lens branch or parameter
        assert f'"{name}"' not in page and not any(f'"{keep}"' in page for keep in lens.KEEP), name


def test_prev_next_keep_only_the_shown_lens_parameters(store_env):
    nav = links(run("unit", model=MODEL_ID, layer="2", unit="3", view="stats", heat="false", source="0"))
    assert nav["Next unit"] == {"model": MODEL_ID, "layer": "2", "unit": "4", "view": "stats"}


# ---- house rules -----------------------------------------------------------------------------------------------


APP_FILES = [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py")), *sorted((ROOT / "dashboard").rglob("*.py"))]


def test_app_code_has_no_sql_and_pages_are_thin():
    assert not (ROOT / "pages").exists()  # a pages/ folder would switch Streamlit to legacy multipage mode
    for path in APP_FILES:
        text = path.read_text()
        assert "import duckdb" not in text and not re.search(r"\b(SELECT|INSERT|CREATE TABLE)\b", text), path
        assert "import torch" not in text, path
    for path in (ROOT / "app_pages").glob("*.py"):
        assert len(path.read_text().splitlines()) < 120, path


def test_running_every_page_never_imports_torch(app_store):
    """In a fresh interpreter: the dashboard's imports must not pull torch in (it takes seconds and GBs), nor any
    module of the offline side."""
    import subprocess
    import sys

    script = f"""
import os, sys
os.environ["MICROSCOPE_STORE"] = {str(app_store)!r}
from streamlit.testing.v1 import AppTest
unit = {{"model": {MODEL_ID!r}, "layer": "2", "unit": "1"}}
for page, params in [(None, {{}}), ("model", {{"model": {MODEL_ID!r}}}),
                     ("layer", {{"model": {MODEL_ID!r}, "layer": "2"}}), ("unit", unit),
                     ("unit", {{**unit, "view": "stats"}}), ("unit", {{**unit, "view": "tuning"}}), ("search", {{}})]:
    at = AppTest.from_file({APP!r}, default_timeout=60)
    if page:
        at.switch_page(f"app_pages/{{page}}.py")
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception and not at.error, (page, at.exception, at.error)
print("torch" in sys.modules, any(m.split(".")[0] == "precompute" for m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]


def test_unit_url_is_written_back_canonical(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="03")
    assert at.header[0].value == f"{MODEL_ID}@2:3"
    assert (at.query_params["model"], at.query_params["layer"], at.query_params["unit"]) == (MODEL_ID, "2", "3")
