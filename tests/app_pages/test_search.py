"""The search page keeps its whole state in the URL (`q`, `model`, the tuning filters `by`, `lo`, `hi`, `sel`,
`strength`, `in`): opening a search link restores it, every widget change is written back, and bad values
give a message on the page, through AppTest on the fixture store (tests/conftest.py)."""

import re
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from tests.app_support import MODEL_ID, html, links, run

pytestmark = pytest.mark.app

SEARCH = {"q": "2:4", "model": MODEL_ID, "by": "colour.hue", "lo": "90", "hi": "270", "sel": "0.2",
          "strength": "0.1", "in": "2"}


def results(at: AppTest) -> list[str]:
    return re.findall(r'<a href="(unit\?[^"]+)"', html(at))


def widgets(at: AppTest) -> dict:
    return {w.label: w.value for w in [*at.selectbox, *at.number_input, *at.text_input]}


def widget(at: AppTest, label: str):
    return next(w for w in [*at.selectbox, *at.number_input, *at.text_input] if w.label == label)


def test_a_search_link_restores_the_search(store_env, app_store):
    from store.queries import Store

    at = run("search", **SEARCH)
    assert widgets(at) == {"Model": MODEL_ID, "Unit or layer": "2:4", "Family and parameter": "colour.hue",
                           "In layer": "2", "Preferred from": 90.0, "to": 270.0, "Min selectivity": 0.2,
                           "Min best response": 0.1, "Votes for class": ""}
    assert links(at)[f"{MODEL_ID}@2:4"] == {"model": MODEL_ID, "layer": "2", "unit": "4"}
    expected = Store(app_store).find_tuned(MODEL_ID, "colour", "hue", 90, 270, 0.2, "2", limit=100, min_relative=0.1)
    assert expected and {r["layer"] for r in expected} == {"2"}
    assert [int(re.search(r"unit=(\d+)", h).group(1)) for h in results(at)] == [r["unit"] for r in expected]
    assert not at.warning and dict(at.query_params) == SEARCH  # nothing rewritten: the link was canonical


def test_every_widget_change_is_written_to_the_url(store_env):
    at = run("search")
    assert at.query_params["model"] == MODEL_ID  # written even as the only model: a link names its model
    widget(at, "Family and parameter").select("colour.hue").run()
    assert at.query_params["by"] == "colour.hue" and widget(at, "to").value == 345.0  # the hue's range
    for lo in (90.0, 120.0):  # a second change of the same widget is kept too
        widget(at, "Preferred from").set_value(lo).run()
        assert at.query_params["lo"] == f"{lo:g}" and widget(at, "Preferred from").value == lo
    widget(at, "to").set_value(270.0).run()
    widget(at, "Min selectivity").set_value(0.3).run()
    widget(at, "Min best response").set_value(0.0).run()
    widget(at, "In layer").select("2").run()
    state = dict(at.query_params)
    assert state == {"model": MODEL_ID, "by": "colour.hue", "lo": "120", "hi": "270", "sel": "0.3", "strength": "0",
                     "in": "2"}
    shared = run("search", **state)  # the URL as a link: the same search, the same results
    assert widgets(shared) == widgets(at) and results(shared) == results(at)
    widget(at, "Preferred from").set_value(0.0).run()  # back to the default: gone from the URL
    assert "lo" not in at.query_params
    widget(at, "Family and parameter").select("gratings.orientation").run()  # a range is per parameter
    assert "hi" not in at.query_params and widget(at, "to").value == 165.0
    assert at.query_params["sel"] == "0.3" and at.query_params["in"] == "2"  # thresholds and layer stay


def test_a_submitted_query_that_finds_nothing_stays_in_the_url(store_env):
    at = run("search")
    at.text_input[0].input("2:99")
    at.form_submit_button[0].click()
    at.run()
    assert at.title[0].value == "Search" and "out of range" in at.error[0].value
    assert at.query_params["q"] == "2:99" and at.query_params["model"] == MODEL_ID
    shared = run("search", **dict(at.query_params))
    assert "out of range" in shared.error[0].value and shared.text_input[0].value == "2:99"


def test_bad_values_in_a_search_link_give_messages(store_env):
    at = run("search", model="nope", by="plaid.size", lo="abc", hi="nan", sel="5", strength="-1", **{"in": "zz"})
    warnings = "\n".join(w.value for w in at.warning)
    for message in ("Unknown model `nope`", "Unknown by `plaid.size`", "Bad lo `abc`: not a number",
                    "Bad hi `nan`: not a number", "Out-of-range sel `5` (0 to 1); using 1",
                    "Out-of-range strength `-1` (at least 0); using 0", "Unknown in `zz`"):
        assert message in warnings
    assert widgets(at) == {"Model": MODEL_ID, "Unit or layer": "", "Family and parameter": "gratings.orientation",
                           "In layer": "", "Preferred from": 0.0, "to": 165.0, "Min selectivity": 1.0,
                           "Min best response": 0.0, "Votes for class": ""}
    assert dict(at.query_params) == {"model": MODEL_ID, "sel": "1", "strength": "0"}  # the URL says what is shown


@pytest.fixture(scope="module")
def two_models(app_store, tmp_path_factory):
    """The fixture store plus a second model (statistics of its first layer only), ingested together."""
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    folder = tmp_path_factory.mktemp("two_models")
    shutil.copytree(app_store.parent, folder, dirs_exist_ok=True)
    store = folder / app_store.name
    precompute(Request(model=f"{folder / 'tiny_app_model.py'}:build", store=store, layers="0", techniques="stats",
                       max_images=16, progress=False, overrides=Overrides(name="other net", input_size=64)))
    return store


def test_picking_another_model_writes_it_and_drops_the_layer_filter(two_models, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_STORE", str(two_models))
    at = run("search", model=MODEL_ID, by="colour.hue", **{"in": "2"})
    assert set(widget(at, "Model").options) == {MODEL_ID, "other net"}
    widget(at, "Model").select("other net").run()
    assert at.query_params["model"] == "other net" and "in" not in at.query_params
    assert "No tuning curves are stored for other net" in "\n".join(c.value for c in at.caption)
    widget(at, "Model").select(MODEL_ID).run()
    assert at.query_params["model"] == MODEL_ID and widget(at, "In layer").value == ""
    assert at.query_params["by"] == "colour.hue"  # the family filter holds for any model
