"""Sign-in against a real OpenID Connect provider on loopback (oidc-provider-mock), in a real browser.

Signed out, every deep link shows the sign-in gate and nothing of the store; signing in lands on the view the
link named; a signed-in user who is not on the allowlist is told so and can sign out."""

import os
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect

from tests.app_support import MODEL_ID
from tests.browser_support import free_port, require_chromium, streamlit_server

pytestmark = [pytest.mark.app, pytest.mark.browser]
require_chromium()
oidc_provider_mock = pytest.importorskip("oidc_provider_mock")


@pytest.fixture(scope="module")
def provider():
    with oidc_provider_mock.run_server_in_thread(port=0) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def notes_db(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('login_notes') / 'notes.sqlite'}"


@pytest.fixture(scope="module")
def server(app_store, provider, notes_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("login_server")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    secrets = folder / "secrets.toml"
    secrets.write_text(f"""
[auth]
redirect_uri = "{base}/oauth2callback"
cookie_secret = "a-test-cookie-secret-of-enough-length"
client_id = "microscope"
client_secret = "microscope-secret"
server_metadata_url = "{provider}/.well-known/openid-configuration"

[microscope]
allowed = ["@lab.org"]
""")
    env = {k: v for k, v in os.environ.items() if k != "MICROSCOPE_ALLOWED"}
    env["MICROSCOPE_STORE"] = str(app_store)
    env["MICROSCOPE_NOTES"] = notes_db
    env.pop("MICROSCOPE_NOTES_READONLY", None)
    with streamlit_server(port, env, folder, ("--server.fileWatcherType", "none", "--secrets.files", str(secrets))):
        yield base


def sign_in(page, email: str) -> None:
    """Through the gate's button and the provider's own form (a new subject gets `email` = the subject)."""
    page.get_by_role("button", name="Sign in").click()
    page.locator("input[name=sub]").fill(email)
    page.get_by_role("button", name="Authorize").click()


UNIT = {"model": MODEL_ID, "layer": "2", "unit": 3}
DEEP_LINKS = [f"/unit?{urlencode(UNIT)}", f"/unit?{urlencode({**UNIT, 'view': 'stats'})}",
              f"/unit?{urlencode({**UNIT, 'embed': 1})}", f"/layer?{urlencode({'model': MODEL_ID, 'layer': '6'})}",
              f"/model?{urlencode({'model': MODEL_ID})}", "/search", "/"]


def test_signed_out_every_deep_link_shows_only_the_gate(server, browser):
    context = browser.new_context()
    page = context.new_page()
    for link in DEEP_LINKS:
        page.goto(server + link)
        page.get_by_role("button", name="Sign in").wait_for(timeout=30_000)
        page.wait_for_timeout(500)  # anything a page would draw comes in the same run as the gate, before it ends
        body = page.locator("body").inner_text()
        assert MODEL_ID not in body and "You are here" not in body and "Store" not in body, link
        assert page.locator("main img").count() == 0, link
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0, link
    context.close()


def test_sign_in_lands_on_the_deep_linked_unit(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.goto(f"{server}/unit?{urlencode({**UNIT, 'view': 'stats'})}")
    sign_in(page, "ada@lab.org")
    page.get_by_role("heading", name=f"{MODEL_ID}@2:3").wait_for(timeout=30_000)
    page.wait_for_url(lambda url: "unit=3" in url and "view=stats" in url and "layer=2" in url, timeout=10_000)
    expect(page.get_by_text("Signed in as ada@lab.org")).to_be_visible(timeout=10_000)
    page.screenshot(path=str(tmp_path / "signed-in.png"))

    # The identity cookie holds for the browser: another deep link opens straight away.
    page.goto(f"{server}/layer?{urlencode({'model': MODEL_ID, 'layer': '0'})}")
    page.locator("a.ms-tile").first.wait_for(timeout=30_000)
    # Store images are inlined in the page run: none is served from Streamlit's /media route, which no login guards.
    sources = page.locator("main img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
    assert sources and all(src.startswith("data:image/") for src in sources)
    context.close()


def test_a_user_not_on_the_allowlist_is_denied(server, browser, tmp_path):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/layer?{urlencode({'model': MODEL_ID, 'layer': '0'})}")
    sign_in(page, "eve@elsewhere.com")
    page.get_by_text("Access denied").wait_for(timeout=30_000)
    assert "eve@elsewhere.com is not on this Microscope's allowlist" in page.locator("body").inner_text()
    page.wait_for_timeout(500)
    assert page.locator("a.ms-tile").count() == 0 and page.locator("main img").count() == 0
    assert MODEL_ID not in page.locator("body").inner_text()

    page.screenshot(path=str(tmp_path / "denied.png"))
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(lambda url: not url.startswith(server), timeout=30_000)  # the provider's sign-out
    page.goto(server + "/")
    page.get_by_role("button", name="Sign in").wait_for(timeout=30_000)  # the identity cookie is gone
    context.close()


def test_a_note_is_signed_with_the_verified_email_of_the_user(server, browser, notes_db):
    from store.notes import Notes

    context = browser.new_context(viewport={"width": 1300, "height": 1400})
    page = context.new_page()
    page.goto(f"{server}/unit?{urlencode({**UNIT, 'unit': 5})}")
    sign_in(page, "bob@lab.org")
    page.get_by_role("heading", name=f"{MODEL_ID}@2:5").wait_for(timeout=30_000)
    page.get_by_label("Label").fill("written by Bob")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved (revision 1).").wait_for(timeout=30_000)
    held = Notes.open(notes_db, readonly=False)
    try:
        saved = held.get(MODEL_ID, "2", 5)
        assert (saved.label, saved.label_by, saved.updated_by) == ("written by Bob", "bob@lab.org", "bob@lab.org")
        assert held.history(MODEL_ID, "2", 5)[0]["author"] == "bob@lab.org"
    finally:
        held.close()
    expect(page.get_by_text("label by bob@lab.org")).to_be_visible(timeout=10_000)
    context.close()
