"""Who may enter: everyone when no login is configured (a laptop); with an `[auth]` section in the secrets
(Streamlit's `st.login`, an OpenID Connect provider), only signed-in users whose email is on the allowlist.

The allowlist is `[microscope] allowed = ["ada@lab.org", "@lab.org"]` in `.streamlit/secrets.toml`, or the
environment variable MICROSCOPE_ALLOWED="ada@lab.org,@lab.org", which wins when set. An entry is an address,
`@domain` for everyone at that domain, or `*` for anyone the provider signs in.

app.py asks `admitted()` before any page runs. Everything the dashboard shows (text, charts, store images as
data URIs) travels over the session's websocket from a script run, so a run that stops at the gate reveals
nothing. Streamlit's login ends on the app's root page; the URL a signed-out visitor asked for is kept in the
tab's sessionStorage and reopened after signing in.
"""

from __future__ import annotations

import json

import streamlit as st

from store import config

NEXT_KEY = "microscope-next"


def _secrets_section(name: str):
    try:
        return st.secrets.get(name)
    except Exception:  # noqa: BLE001 - no secrets file, or one that does not parse: treat as no section
        return None


def login_configured() -> bool:
    return bool(_secrets_section("auth"))


def allowlist() -> list[str]:
    entries = config.allowed()
    if entries is None:
        section = _secrets_section("microscope") or {}
        entries = section.get("allowed", [])
        entries = entries.replace(",", " ").split() if isinstance(entries, str) else list(entries)
    return [e.strip().lower() for e in entries if e.strip()]


def allowed(email: str | None, rules: list[str]) -> bool:
    if not email or "@" not in email:
        return False
    email = email.strip().lower()
    return any(rule == "*" or rule == email or (rule.startswith("@") and email.endswith(rule)) for rule in rules)


def _user() -> dict:
    try:
        return st.user.to_dict()
    except Exception:  # noqa: BLE001 - no run context (bare mode): nobody is signed in
        return {}


def signed_in_email() -> str | None:
    """The signed-in user's email as the provider verified it (Streamlit's signed session cookie, never a value
    the page sends), or None: nobody signed in, or an address the provider has not verified."""
    user = _user()
    if not user.get("is_logged_in") or user.get("email_verified") is False or not user.get("email"):
        return None
    return str(user["email"]).strip().lower()


def admitted() -> bool:
    """May this run show the app? Open without login; otherwise signed in, verified where the provider says,
    and on the allowlist. An allowlist without a login fails closed (see `gate`)."""
    if not login_configured():
        return not allowlist()
    user = _user()
    return (bool(user.get("is_logged_in")) and user.get("email_verified") is not False
            and allowed(user.get("email"), allowlist()))


def gate() -> None:
    """What a visitor who may not enter sees instead of the app: a sign-in, or why access is denied."""
    st.title("Microscope")
    if not login_configured():
        st.error("An allowlist (`MICROSCOPE_ALLOWED` or `[microscope] allowed`) is set but no login is configured, "
                 "so nobody can be checked against it.", icon=":material/lock:")
        st.caption("Add an `[auth]` section for your OpenID Connect provider to `.streamlit/secrets.toml` "
                   "(see the README's Deploying section), or remove the allowlist to run open.")
        return
    user = _user()
    if not user.get("is_logged_in"):
        # Saved before the provider's pages replace this one; the root page reopens it after signing in.
        st.html(f"""<script>
          const here = window.location.pathname + window.location.search;
          sessionStorage.setItem({json.dumps(NEXT_KEY)}, here);
        </script>""", unsafe_allow_javascript=True)
        st.markdown("This Microscope is private to its team. Sign in to browse it; you will come back to the page "
                    "you asked for.")
        if st.button("Sign in", type="primary", icon=":material/login:"):
            st.login()
        return
    email = user.get("email") or "(no email address)"
    if user.get("email_verified") is False:
        reason = f"the provider has not verified **{email}**"
    else:
        reason = f"**{email}** is not on this Microscope's allowlist"
    st.error(f"Access denied: {reason}.", icon=":material/block:")
    st.caption("Ask the team that runs this Microscope to add you, or sign in with another account.")
    if st.button("Sign out", icon=":material/logout:"):
        st.logout()


def restore_deep_link() -> None:
    """After signing in, the provider returns to the root page: go on to the page saved at the gate, once."""
    if not login_configured() or st.session_state.get("_microscope_restored"):
        return
    st.session_state["_microscope_restored"] = True
    st.html(f"""<script>
      const next = sessionStorage.getItem({json.dumps(NEXT_KEY)});
      sessionStorage.removeItem({json.dumps(NEXT_KEY)});
      const here = window.location.pathname + window.location.search;
      if (next && next.startsWith("/") && !next.startsWith("//") && next !== here) window.location.replace(next);
    </script>""", unsafe_allow_javascript=True)


def account() -> None:
    """Who is signed in, and a way out, in the sidebar (with login configured)."""
    if not login_configured():
        return
    with st.sidebar:
        st.caption(f"Signed in as {_user().get('email')}")
        if st.button("Sign out", icon=":material/logout:", key="_microscope_sign_out"):
            st.logout()
