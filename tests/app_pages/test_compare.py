"""The similar lens and the compare view on the fixture store (tests/conftest.py `app_store`): what they draw,
where their links go, and a bad parameter."""

import re
from urllib.parse import parse_qs

import pytest

from tests.app_support import MODEL_ID, html, links, run, texts

pytestmark = pytest.mark.app


def hrefs(at, css_class: str) -> list[dict[str, str]]:
    """The query of every unit link inside elements of `css_class`."""
    blocks = [chunk.split("ms-label")[0] for chunk in html(at).split(f'class="{css_class}"')[1:]]
    found = [q for b in blocks for q in re.findall(r'href="unit\?([^"]+)"', b)]
    return [{k: v[-1] for k, v in parse_qs(q.replace("&amp;", "&")).items()} for q in found]


def test_similar_lens_shows_neighbours_in_the_layer_and_other_layers_with_scores(store_env):
    at = run("unit", model=MODEL_ID, layer="2", unit="3", view="similar")
    shown = texts(at)
    assert "In 2" in shown and f"In other layers of {MODEL_ID}" in shown and "correlation (Pearson)" in shown
    neighbours = hrefs(at, "ms-named")
    assert neighbours and all(n["model"] == MODEL_ID and n["view"] == "similar" for n in neighbours)
    assert not any(n["layer"] == "2" and n["unit"] == "3" for n in neighbours)  # never itself
    scores = [float(s) for s in re.findall(r'<span>(-?\d\.\d\d)</span>', html(at))]
    assert scores and all(-1 <= s <= 1 for s in scores)
    assert "Match all units of 2 with " + f"{MODEL_ID}@2" in links(at)


def test_similar_lens_of_a_dead_unit_says_why_it_has_none(store_env):
    at = run("unit", model=MODEL_ID, layer="0", unit="0", view="similar")
    assert any("dead unit" in i.value for i in at.info)


def test_compare_page_matches_two_layers_and_links_both_sides(store_env):
    at = run("compare", a=f"{MODEL_ID}@0", b=f"{MODEL_ID}@2")
    assert [m.label for m in at.metric][:3] == ["Matched pairs", "Good matches (r ≥ 0.5)", "Linear CKA"]
    assert at.metric[0].value == "7"  # 8 units in layer 0, its dead unit unmatched
    sides = hrefs(at, "ms-pair")
    assert len(sides) == 14 and {s["layer"] for s in sides} == {"0", "2"}
    assert {int(s["unit"]) for s in sides if s["layer"] == "0"} == set(range(1, 8))
    assert "Layer by layer" in texts(at) and at.get("plotly_chart")


def test_compare_page_bad_side_warns_and_falls_back(store_env):
    at = run("compare", a="nonsense@layer", b=f"{MODEL_ID}@2")
    assert any("Unknown a" in w.value for w in at.warning)
    assert at.metric[0].value.isdigit()


def test_layer_page_links_to_its_closest_layer_in_the_compare_view(store_env):
    at = run("layer", model=MODEL_ID, layer="2")
    link = next(v for k, v in links(at).items() if k.startswith("Compare with"))
    assert link["a"] == f"{MODEL_ID}@2" and link["b"].startswith(f"{MODEL_ID}@")
