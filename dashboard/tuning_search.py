"""Tuning summaries outside the unit page: the search page's "find units by tuning" form (state in the URL:
`by=FAMILY.AXIS`, `lo`, `hi`, `sel`, `strength`, `in=LAYER`) and the layer gallery's tuning sort columns."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, html, links, url_widgets

LIMIT = 100


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def tuning_axes(key: data.StoreKey, model_id: str) -> dict[str, list[dict]]:
    return data.open_store(*key).tuning_axes(model_id)


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def layer_tuning(key: data.StoreKey, model_id: str, layer: str) -> pd.DataFrame:
    return data.open_store(*key).layer_tuning(model_id, layer)


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def find(key: data.StoreKey, model_id: str, family: str, axis: str, lo: float, hi: float, sel: float,
         layer: str | None, strength: float) -> list[dict]:
    return data.open_store(*key).find_tuned(model_id, family, axis, lo, hi, sel, layer, limit=LIMIT,
                                            min_relative=strength or None)


def column_label(column: str) -> str:
    """`gratings_orientation_sel` -> `orientation selectivity (gratings)`."""
    family, axis, _ = column.rsplit("_", 2)
    return f"{axis} selectivity ({family})"


def gallery_sorts(frame: pd.DataFrame) -> dict[str, str]:
    """Sort options for the layer gallery from a layer_tuning frame: each selectivity, both directions."""
    sorts = {}
    for column in frame.columns:
        if column.endswith("_sel"):
            sorts[f"-{column}"] = f"{column_label(column)}, highest first"
            sorts[column] = f"{column_label(column)}, lowest first"
    return sorts


def render(key: data.StoreKey, model_id: str, model_changed: bool = False) -> None:
    """Find units of a model by family, preferred value range and selectivity; each result a deep link.
    `model_changed`: the user just picked another model, whose layers the `in` filter cannot name."""
    if model_changed:
        url_widgets.forget("in")
    families = tuning_axes(key, model_id)
    st.subheader("Find units by tuning", anchor=False)
    if not families:
        st.caption(f"No tuning curves are stored for {model_id}: "
                   f"`microscope precompute {model_id} --techniques tuning`.")
        return
    options = {f"{f}.{a['name']}": f"{f}: preferred {a['name']}" + (f" ({a['unit']})" if a["unit"] else "")
               for f, axes in families.items() for a in axes}
    default = "gratings.orientation" if "gratings.orientation" in options else next(iter(options))
    cols = st.columns([3, 2, 2, 2, 2, 3], vertical_alignment="bottom")
    by, changed = url_widgets.choice(cols[0], "Family and parameter", options, "by", default)
    if changed:
        url_widgets.forget("lo", "hi")  # a range of orientations means nothing for spatial frequency
    family, axis_name = by.split(".", 1)
    axis = next(a for a in families[family] if a["name"] == axis_name)
    circular = axis["period"] is not None
    lo = url_widgets.number(cols[1], "Preferred from", "lo", float(min(axis["values"])))
    hi = url_widgets.number(cols[2], "to", "hi", float(max(axis["values"])))
    sel = url_widgets.number(cols[3], "Min selectivity", "sel", 0.5 if circular else 0.0, min_value=0.0,
                             max_value=1.0, step=0.05, disabled=not circular)
    layers = {"": "all layers",
              **{entry["layer"]: entry["alias"] or entry["layer"] for entry in data.layers(key, model_id)}}
    # Selectivity is scale-free: a unit that barely stirs can be perfectly selective. By default, ask for a best
    # response of at least a fifth of the unit's top dataset activation.
    strength = url_widgets.number(cols[4], "Min best response", "strength", 0.2, min_value=0.0, step=0.05,
                                  help="best stimulus response as a fraction of the unit's top dataset activation "
                                       "(0: any)")
    layer, _ = url_widgets.choice(cols[5], "In layer", layers, "in", "")
    rows = find(key, model_id, family, axis_name, lo, hi, sel if circular else 0.0, layer or None, strength)
    wrap = " (wrapping round)" if circular and lo > hi else ""
    st.caption(f"{len(rows)}{'+' if len(rows) == LIMIT else ''} units prefer {axis_name} {lo:g} to {hi:g} "
               f"{axis['unit']}{wrap}" + (f" with selectivity ≥ {sel:g}" if circular else "")
               + (f", best response ≥ {strength:.0%} of their top dataset activation" if strength else "")
               + (", most selective first." if circular else "."))
    if rows:
        unit = axis["unit"]
        st.html(html.table(
            [("unit", "unit"), ("preferred", f"#preferred ({unit})" if unit else "#preferred"),
             ("width", "#half-max width"), ("selectivity", "#selectivity"), ("best", "#best response"),
             ("relative", "#of dataset max")],
            [{"unit": {"href": links.unit_href(model_id, r["layer"], r["unit"], view="tuning", family=family),
                       "text": links.unit_id(model_id, r["alias"] or r["layer"], r["unit"])},
              "preferred": f"{r['preferred']:g}", "width": html.number(r["width"]),
              "selectivity": html.number(r["selectivity"]), "best": html.number(r["best"]),
              "relative": "–" if r["relative"] is None else f"{r['relative']:.0%}"} for r in rows]))
