"""The dashboard in a real browser: a fresh `streamlit run app.py`, a unit deep link as the very first request."""

import os
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.app_support import MODEL_ID
from tests.browser_support import free_port, require_chromium, streamlit_server

pytestmark = [pytest.mark.app, pytest.mark.browser]
require_chromium()


@pytest.fixture(scope="module")
def server(app_store, tmp_path_factory):
    env = {**os.environ, "MICROSCOPE_STORE": str(app_store)}
    with streamlit_server(free_port(), env, tmp_path_factory.mktemp("server")) as base:
        yield base


def test_unit_deep_link_is_the_first_request(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    query = urlencode({"model": MODEL_ID, "layer": "2", "unit": 3})
    page.goto(f"{server}/unit?{query}")

    unit_id = f"{MODEL_ID}@2:3"
    page.get_by_role("heading", name=unit_id).wait_for(timeout=30_000)
    # Streamlit draws the page progressively: wait for all 16 top, 16 bottom and 11 quantile examples.
    expect(page.locator(".ms-ex-grid img")).to_have_count(43, timeout=30_000)
    assert page.locator("main img").count() > 0

    nav = page.locator('[data-testid="stSidebarNav"] a')
    nav.first.wait_for(timeout=10_000)
    labels = {t.strip().splitlines()[-1] for t in nav.all_inner_texts()}  # each link is "icon-name\n\nLabel"
    assert {"Models", "Search"} <= labels
    assert page.get_by_text("You are here").is_visible()
    shot = tmp_path / "unit.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000

    # Next unit is a link to the page already open: the content and the address bar must both move on.
    page.get_by_role("link", name="Next unit").click()
    page.get_by_role("heading", name=f"{MODEL_ID}@2:4").wait_for(timeout=30_000)
    page.wait_for_url(lambda url: "unit=4" in url, timeout=10_000)


def test_gallery_tile_opens_its_unit(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/layer?{urlencode({'model': MODEL_ID, 'layer': '0', 'hide_dead': 'true'})}")
    tiles = page.locator("a.ms-tile")
    tiles.first.wait_for(timeout=30_000)
    assert tiles.count() == 7  # 8 units, the dead one hidden by the URL's filter
    tiles.nth(2).click()
    page.get_by_role("heading", name=f"{MODEL_ID}@0:3").wait_for(timeout=30_000)
    assert "unit=3" in page.url


def test_embed_has_no_navigation(server, browser):
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    page.goto(f"{server}/unit?{urlencode({'model': MODEL_ID, 'layer': '2', 'unit': 1, 'embed': 1})}")
    page.get_by_role("heading", name=f"{MODEL_ID}@2:1").wait_for(timeout=30_000)
    expect(page.locator(".ms-ex-grid img")).to_have_count(43, timeout=30_000)  # the page is complete
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    # The chrome is hidden by a style element of the page's first run; wait for it rather than race it.
    expect(page.locator('header[data-testid="stHeader"]')).to_be_hidden(timeout=10_000)


def test_bad_deep_link_shows_a_message(server, browser):
    page = browser.new_page()
    page.goto(f"{server}/unit?{urlencode({'model': MODEL_ID, 'layer': '2', 'unit': 'abc'})}")
    page.get_by_text("Bad unit").wait_for(timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0



def test_search_link_restores_the_search_and_edits_move_the_url(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    search = {"model": MODEL_ID, "by": "colour.hue", "lo": "90", "hi": "270", "sel": "0.2"}
    page.goto(f"{server}/search?{urlencode(search)}")
    page.get_by_text("units prefer hue 90 to 270").wait_for(timeout=30_000)
    for lo in ("120", "150"):  # each edit, the second too, reaches the results and the address bar
        box = page.get_by_label("Preferred from")
        box.fill(lo)
        box.press("Enter")
        page.get_by_text(f"units prefer hue {lo} to 270").wait_for(timeout=15_000)
        page.wait_for_url(lambda url, lo=lo: f"lo={lo}" in url, timeout=10_000)
    assert "by=colour.hue" in page.url and "hi=270" in page.url and "sel=0.2" in page.url
    assert page.locator('[data-testid="stException"]').count() == 0


def test_class_votes_lens_and_gallery_column_render(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/unit?{urlencode({'model': MODEL_ID, 'layer': '2', 'unit': 3, 'view': 'classes'})}")
    page.get_by_role("heading", name="Raises").wait_for(timeout=30_000)
    expect(page.locator("table.ms-votes")).to_have_count(3, timeout=30_000)  # raises, lowers, predicted
    expect(page.locator("table.ms-votes td.bar div").first).to_be_visible()
    page.goto(f"{server}/layer?{urlencode({'model': MODEL_ID, 'layer': '2'})}")
    expect(page.locator(".ms-tile .ms-vote")).to_have_count(16, timeout=30_000)
    assert page.locator(".ms-tile .ms-vote").first.inner_text().startswith("↑ class ")
    shot = tmp_path / "gallery.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_dataset_tiles_the_browser_draws_match_the_server_side_crop_and_heatmap(server, browser, app_store):
    """The page sends each stored image whole with its box and a heat layer; what the browser draws must be the
    crop with its heatmap that store.pictures makes (the CLI's `unit --images`), and not the untinted crop."""
    import io

    import numpy as np
    from PIL import Image

    from store import pictures
    from store.queries import Store

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/unit?{urlencode({'model': MODEL_ID, 'layer': '2', 'unit': 3})}")
    expect(page.locator(".ms-ex-grid img")).to_have_count(43, timeout=30_000)
    held = Store(app_store)
    rows = held.unit_examples(MODEL_ID, "2", 3)
    held.close()
    vmax = rows[0]["activation"]
    for i in (0, 16):  # the strongest top example, the weakest bottom one: both tinted on the top one's scale
        tile = page.locator(".ms-ex .ms-crop").nth(i)
        tile.scroll_into_view_if_needed()
        drawn = np.asarray(Image.open(io.BytesIO(tile.screenshot())).convert("RGB"), dtype=float)
        crop = pictures.crop(pictures.decode(rows[i]["image"]), rows[i]["box"], drawn.shape[1])
        tinted = pictures.overlay(crop, pictures.heat_array(rows[i]["heat"], rows[i]["heat_cells"]), vmax)
        side = min(drawn.shape[0], crop.height)
        near = np.abs(drawn[:side] - np.asarray(tinted, dtype=float)[:side]).mean()
        plain = np.abs(drawn[:side] - np.asarray(crop, dtype=float)[:side]).mean()
        assert near < 10 and plain > 2 * near + 5, (i, near, plain)
