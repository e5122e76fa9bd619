"""Microscope dashboard: `streamlit run app.py`. Page config, navigation over app_pages/, the shared frame.

With login configured (dashboard.access), a visitor who is not signed in and allowed sees only the gate.
The store is opened here once per run; a missing or unreadable store stops every page with a message that
says how to build one. Pages read the URL (st.query_params) and the store through dashboard.data.
"""

import streamlit as st

from dashboard import access, chrome

st.set_page_config(page_title="Microscope", page_icon="🔬", layout="wide")

admitted = access.admitted()
page = st.navigation(chrome.pages(), position="hidden" if chrome.is_embed() or not admitted else "sidebar")
if not admitted:
    access.gate()  # with login configured: nothing below runs, so no store is opened and no page is drawn
    st.stop()
access.restore_deep_link()
key = chrome.open_store()
chrome.frame(key)
if not chrome.is_embed():
    access.account()
if key is not None:
    try:
        page.run()
    except Exception:
        # A store replaced mid-run closes the connection this run was reading; anything else is a real bug.
        if not chrome.store_replaced(key):
            raise
        st.warning("The store was replaced while this page was loading. Reload the page to see the new one.")
