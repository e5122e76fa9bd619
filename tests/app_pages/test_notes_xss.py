"""Text is always text: `<script>` and `<img onerror=...>` in a label and a note never run, in the layer
gallery, on the unit page and in search results, in a real browser (Debian's chromium) against a fresh
`streamlit run app.py` whose notes database holds the payloads."""

import os
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from store.notes import Notes
from tests.app_support import MODEL_ID
from tests.browser_support import free_port, require_chromium, streamlit_server

pytestmark = [pytest.mark.app, pytest.mark.browser]
require_chromium()

LABEL_SCRIPT = "<script>window.__xss='label'; alert(1)</script>xss-a"
LABEL_IMG = "<img src=x onerror=\"window.__xss='img'; alert(2)\">xss-b"
NOTE = ("xss note <script>window.__xss='note'; alert(3)</script>\n\n"
        "<img src=x onerror=\"window.__xss='note-img'; alert(4)\">\n\n"
        "[a link](javascript:window.__xss='link') and **bold**")


@pytest.fixture(scope="module")
def server(app_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("xss")
    url = f"sqlite:///{folder / 'notes.sqlite'}"
    held = Notes.open(url, readonly=False)
    held.save(MODEL_ID, "2", 1, label=LABEL_SCRIPT, note=NOTE, families=["curves"], author="local", seen=0)
    held.save(MODEL_ID, "2", 2, label=LABEL_IMG, note=NOTE, families=[], author="local", seen=0)
    held.close()
    env = {**os.environ, "MICROSCOPE_STORE": str(app_store), "MICROSCOPE_NOTES": url}
    env.pop("MICROSCOPE_NOTES_READONLY", None)
    with streamlit_server(free_port(), env, folder) as base:
        yield base


def opened(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    return page, dialogs


def assert_inert(page, dialogs) -> None:
    page.wait_for_timeout(500)  # an onerror handler fires once the broken image fails to load
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.locator('img[src="x"]').count() == 0  # no element was made from the payload
    assert page.locator("script:has-text('__xss')").count() == 0


def test_payloads_in_the_gallery_are_text(server, browser):
    page, dialogs = opened(browser, f"{server}/layer?{urlencode({'model': MODEL_ID, 'layer': '2'})}")
    notes = page.locator(".ms-tile .ms-note")
    expect(notes).to_have_count(2, timeout=30_000)
    assert sorted(notes.all_inner_texts()) == sorted([LABEL_SCRIPT, LABEL_IMG])
    assert_inert(page, dialogs)


def test_payloads_on_the_unit_page_are_text(server, browser):
    for unit, label in ((1, LABEL_SCRIPT), (2, LABEL_IMG)):
        page, dialogs = opened(browser, f"{server}/unit?{urlencode({'model': MODEL_ID, 'layer': '2', 'unit': unit})}")
        page.locator(".ms-notes-label").wait_for(timeout=30_000)
        assert page.locator(".ms-notes-label").inner_text() == label
        page.get_by_text("xss note").first.wait_for(timeout=10_000)  # the note's Markdown is drawn
        assert page.locator("strong", has_text="bold").count() >= 1  # Markdown still works
        page.get_by_text("History (").first.click()  # the history table shows the payloads too
        page.locator(".ms-table").first.wait_for(timeout=10_000)
        assert_inert(page, dialogs)
        link = page.get_by_role("link", name="a link")
        if link.count():  # Streamlit drops javascript: URLs; where it keeps the link, clicking it must do nothing
            assert not (link.first.get_attribute("href") or "").startswith("javascript:")
            link.first.click()
            assert_inert(page, dialogs)


def test_payloads_in_search_results_are_text(server, browser):
    page, dialogs = opened(browser, f"{server}/search?{urlencode({'q': 'xss', 'model': MODEL_ID})}")
    rows = page.locator(".ms-table tbody tr", has_text="xss-")  # the notes hits, not the tuning table
    expect(rows).to_have_count(2, timeout=30_000)
    text = " ".join(rows.all_inner_texts())
    assert LABEL_SCRIPT in text and LABEL_IMG in text
    assert_inert(page, dialogs)
