"""Widgets whose value lives in the URL under a short name, written explicitly (`sort=-max`, `lo=90`): a widget
bound with bind="query-params" would write a selectbox's display label, silently drop a bad value, and keep
its value when its default moves (the tuning range follows the chosen parameter).

Each widget is keyed, so it keeps its identity across reruns and a second change by the user is never lost;
its session state is set from the URL only when the URL changed by other means (a fresh page, a link, the
back button) or holds no valid value. A missing value is the default; a bad one gives a warning on the page
and the default (or the nearest allowed value), never a traceback."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from dashboard.params import shown


def _key(name: str) -> str:
    return f"url-{name}"


def _follow(name: str, value: Any, default: Any, valid=lambda v: True) -> str:
    """The widget key for URL parameter `name`. Its state is set to `value` (what the URL says) unless the URL
    and the default are as this widget left them: then the state is the user's latest input, kept."""
    key, seen = _key(name), _key(name) + "-seen"
    mark = (st.query_params.get(name), default)
    if key not in st.session_state or st.session_state.get(seen) != mark or not valid(st.session_state[key]):
        st.session_state[key] = value
    st.session_state[seen] = mark
    return key


def _publish(name: str, raw: str | None) -> None:
    """Writes what the widget now shows to the URL, noting it as the widget's own doing."""
    if raw is None:
        if name in st.query_params:
            del st.query_params[name]
    else:
        st.query_params[name] = raw
    seen = _key(name) + "-seen"
    st.session_state[seen] = (raw, st.session_state[seen][1])


def forget(*names: str) -> None:
    """Drops URL parameters whose meaning depended on a choice the user just changed (the range of a
    parameter); their widgets, drawn later in the run, start again from their defaults."""
    for name in names:
        if name in st.query_params:
            del st.query_params[name]
        st.session_state.pop(_key(name) + "-seen", None)


def choice(where, label: str, options: dict[str, str], name: str, default: str, *,
           drop_default: bool = True, **kw) -> tuple[str, bool]:
    """A selectbox over `options` ({code: label}) whose code lives in the URL under `name`.
    Returns (choice, changed by the user now)."""
    raw = st.query_params.get(name, default)
    current = raw if raw in options else default
    if raw != current:
        st.warning(f"Unknown {name} {shown(raw)}; using {options[default]}.")
    key = _follow(name, current, default, lambda v: v in options)
    picked = where.selectbox(label, list(options), key=key, format_func=options.get, **kw)
    wanted = None if picked == default and drop_default else picked
    if wanted != st.query_params.get(name):
        _publish(name, wanted)
    return picked, picked != current


def number(where, label: str, name: str, default: float, *, min_value: float | None = None,
           max_value: float | None = None, **kw) -> float:
    """A number input whose value lives in the URL under `name` (absent when it is the default)."""
    raw = st.query_params.get(name)
    low = -math.inf if min_value is None else min_value
    high = math.inf if max_value is None else max_value
    current = default
    if raw is not None:
        try:
            current = float(raw)
        except ValueError:
            current = math.nan
        if not math.isfinite(current):
            st.warning(f"Bad {name} {shown(raw)}: not a number; using {default:g}.")
            current = default
        elif not low <= current <= high:
            current = min(max(current, low), high)
            allowed = (f"{low:g} to {high:g}" if min_value is not None and max_value is not None
                       else f"at least {low:g}" if min_value is not None else f"at most {high:g}")
            st.warning(f"Out-of-range {name} {shown(raw)} ({allowed}); using {current:g}.")
    key = _follow(name, float(current), default)
    value = where.number_input(label, key=key, min_value=min_value, max_value=max_value, **kw)
    value = default if value is None else value
    wanted = None if value == default else f"{value:g}"
    if wanted != raw:
        _publish(name, wanted)
    return value


def text(where, label: str, name: str, **kw) -> str:
    """A text input whose value lives in the URL under `name` (absent when empty)."""
    key = _follow(name, st.query_params.get(name, ""), "")
    value = where.text_input(label, key=key, **kw)
    if value != st.query_params.get(name, ""):
        _publish(name, value or None)
    return value
