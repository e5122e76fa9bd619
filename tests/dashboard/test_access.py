"""The login gate through AppTest: with `[auth]` configured, nothing of the store reaches a visitor who is not
signed in and on the allowlist. The real sign-in against an OpenID Connect provider is in test_login_browser.py."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.access import allowed
from tests.app_support import APP, MODEL_ID

pytestmark = pytest.mark.app

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "s" * 32, "client_id": "c",
        "client_secret": "x", "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}


def unit_page(user: dict | None, secrets: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for name, value in secrets.items():
        at.secrets[name] = value
    if user is not None:
        at.user = user
    at.switch_page("app_pages/unit.py")
    for name, value in {"model": MODEL_ID, "layer": "2", "unit": "3"}.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def headings(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("title", "header", "subheader") for e in getattr(at, kind))


def shown(at: AppTest) -> str:
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "error", "html")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts + [e.value for e in at.sidebar.caption])


def assert_nothing_of_the_store(at: AppTest, store: Path) -> None:
    text = shown(at)
    assert MODEL_ID not in text and "ms-ex-grid" not in text and "data:image" not in text
    assert str(store) not in text and "built" not in text
    assert not at.get("plotly_chart") and not at.get("imgs")


def test_open_without_login(store_env):
    at = unit_page(None, {})
    assert MODEL_ID in headings(at)
    assert not [b for b in at.button if b.label == "Sign in"]


def test_signed_out_sees_only_the_sign_in(store_env):
    at = unit_page({"is_logged_in": False}, {"auth": AUTH, "microscope": {"allowed": ["@lab.org"]}})
    assert [b.label for b in at.button] == ["Sign in"]
    assert "Sign in to browse it" in shown(at)
    assert_nothing_of_the_store(at, store_env)


def test_allowed_user_sees_the_deep_linked_unit(store_env):
    at = unit_page({"is_logged_in": True, "email": "Ada@Lab.org"},
                   {"auth": AUTH, "microscope": {"allowed": ["@lab.org"]}})
    assert f"{MODEL_ID}@2:3" in headings(at)
    assert not at.error


def test_denied_user_gets_a_message_and_a_sign_out(store_env, monkeypatch):
    at = unit_page({"is_logged_in": True, "email": "eve@elsewhere.com"},
                   {"auth": AUTH, "microscope": {"allowed": ["ada@lab.org", "@lab.org"]}})
    assert "Access denied" in at.error[0].value and "eve@elsewhere.com" in at.error[0].value
    assert [b.label for b in at.button] == ["Sign out"]
    assert_nothing_of_the_store(at, store_env)

    # The environment's list wins over the secrets' one.
    monkeypatch.setenv("MICROSCOPE_ALLOWED", "eve@elsewhere.com, bob@lab.org")
    at = unit_page({"is_logged_in": True, "email": "eve@elsewhere.com"},
                   {"auth": AUTH, "microscope": {"allowed": ["@lab.org"]}})
    assert not at.error and f"{MODEL_ID}@2:3" in headings(at)


def test_login_without_an_allowlist_admits_nobody(store_env):
    at = unit_page({"is_logged_in": True, "email": "ada@lab.org"}, {"auth": AUTH})
    assert "Access denied" in at.error[0].value
    assert_nothing_of_the_store(at, store_env)


def test_unverified_email_is_denied(store_env):
    at = unit_page({"is_logged_in": True, "email": "ada@lab.org", "email_verified": False},
                   {"auth": AUTH, "microscope": {"allowed": ["*"]}})
    assert "not verified" in at.error[0].value
    assert_nothing_of_the_store(at, store_env)


def test_an_allowlist_without_login_fails_closed(store_env, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_ALLOWED", "@lab.org")
    at = unit_page(None, {})
    assert "no login is configured" in at.error[0].value
    assert_nothing_of_the_store(at, store_env)


def test_allowlist_rules():
    rules = ["ada@lab.org", "@team.lab.org"]
    assert allowed("ADA@lab.org", rules) and allowed("bob@team.lab.org", rules)
    assert not allowed("bob@lab.org", rules) and not allowed("eve@evilteam.lab.org.com", rules)
    assert not allowed("bob@xteam.lab.org", rules)  # a domain rule is the whole domain, not a suffix of it
    assert not allowed(None, ["*"]) and not allowed("nobody", ["*"]) and allowed("a@b.c", ["*"])
