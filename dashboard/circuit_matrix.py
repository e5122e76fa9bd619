"""The layer page's weight matrix: every unit of the layer against every unit of a layer that feeds it (the
circuits technique's signed kernel sums), as a heatmap whose rows and columns can be reordered so that
families of units (units that read the same inputs) show as blocks."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, url_widgets

MAX_CELLS = 160_000  # beyond this the heatmap is slow to draw in a browser: the strongest rows and columns stay
SORTS = {
    "unit": "unit number",
    "family": "families (similar weight patterns together)",
    "strongest": "strongest input (rows), unit number (columns)",
}


class Drawn(NamedTuple):
    units: np.ndarray    # the rows: units of the layer
    columns: np.ndarray  # units of the source layer
    weights: np.ndarray  # (rows, columns)
    total: tuple[int, int]  # the whole matrix's shape, before any cut


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def matrix(key: data.StoreKey, model_id: str, layer: str, source: str) -> Drawn:
    """The weight matrix as drawn: cut to its strongest rows and columns when it is too big to draw."""
    frame = data.open_store(*key).circuit_matrix(model_id, layer, source)
    if frame.empty:
        return Drawn(np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros((0, 0), dtype=np.float32), (0, 0))
    units, m = frame["unit"].to_numpy(), np.stack([np.asarray(w, dtype=np.float32) for w in frame["weights"]])
    if m.size > MAX_CELLS:
        return Drawn(*strongest(units, m, MAX_CELLS), m.shape)
    return Drawn(units, np.arange(m.shape[1]), m, m.shape)


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def families(key: data.StoreKey, model_id: str, layer: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """family_order of the drawn matrix's rows and of its columns: two SVDs, kept across reruns (the gallery's
    sorting and paging rerun the whole page) and keyed, like every cache here, by the store file's version."""
    m = matrix(key, model_id, layer, source).weights
    return family_order(m), family_order(m.T)


def family_order(m: np.ndarray) -> np.ndarray:
    """Rows ordered by the angle of their projection on the two leading principal axes of the row-normalised
    matrix: rows with similar patterns sit at similar angles, so families become contiguous blocks. The circle
    is cut at the widest gap between neighbouring angles rather than at ±180°, so that no family is split
    between both ends (with two families, one sits right at ±180°)."""
    if len(m) < 3:
        return np.arange(len(m))
    x = m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    if u.shape[1] < 2:
        return np.argsort(u[:, 0], kind="stable")
    angle = np.arctan2(u[:, 1] * s[1], u[:, 0] * s[0])
    order = np.argsort(angle, kind="stable")
    gaps = np.diff(angle[order], append=angle[order[0]] + 2 * np.pi)
    return np.roll(order, -(int(np.argmax(gaps)) + 1))


def ordered(units: np.ndarray, m: np.ndarray, sort: str,
            families: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row units, column units, matrix) in the chosen order; `families` is (row, column) family_order of `m`
    when already known."""
    cols = np.arange(m.shape[1])
    if sort == "family":
        rows, cols = families or (family_order(m), family_order(m.T))
    elif sort == "strongest":
        rows = np.lexsort((units, m.argmax(axis=1)))
    else:
        rows = np.arange(len(units))
    return units[rows], cols, m[np.ix_(rows, cols)]


def strongest(units: np.ndarray, m: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows and columns with the largest weight norms, at most `cells` in all, in their original order."""
    side = int(np.sqrt(cells))
    keep_rows = np.sort(np.argsort(-np.linalg.norm(m, axis=1), kind="stable")[: max(side, cells // m.shape[1])])
    sub = m[keep_rows]
    keep_cols = np.sort(np.argsort(-np.linalg.norm(sub, axis=0), kind="stable")[: max(1, cells // len(keep_rows))])
    return units[keep_rows], keep_cols, sub[:, keep_cols]


def render(key: data.StoreKey, model_id: str, layer: dict, paths: list[dict]) -> None:
    usable = [p for p in paths if p["status"] == "ok"]
    if not usable:
        return
    st.subheader("Weights from the layers that feed this one", anchor=False)
    options = {p["source"]: f"{p['source']}" + (" (adjacent)" if p["hops"] == 1 else f" ({p['hops']} layers back)")
               for p in usable}
    cols = st.columns(2)
    source, _ = url_widgets.choice(cols[0], "Input layer", options, "wsource", usable[0]["source"])
    sort, _ = url_widgets.choice(cols[1], "Order", SORTS, "wsort", "unit")
    units, columns, m, total = matrix(key, model_id, layer["layer"], source)
    if not len(units):
        st.info(f"No weight matrix from {source} is stored.")
        return
    note = ""
    if m.shape != total:
        note = (f" Showing the {len(units):,} rows and {len(columns):,} columns with the largest weights "
                f"(of {total[0]:,} × {total[1]:,}).")
    row_units, order, shown = ordered(units, m, sort, families(key, model_id, layer["layer"], source)
                                      if sort == "family" else None)
    col_units = columns[order]
    vmax = float(np.abs(shown).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=shown, x=[str(c) for c in col_units], y=[str(r) for r in row_units], zmin=-vmax, zmax=vmax,
        colorscale="RdBu", reversescale=True, colorbar=dict(title="weight"),
        hovertemplate=f"{layer['layer']}:%{{y}} ← {source}:%{{x}}<br>weight %{{z:.3g}}<extra></extra>"))
    fig.update_layout(height=min(900, 240 + 4 * len(row_units)), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title=f"unit of {source}", type="category", showticklabels=len(col_units) <= 64),
                      yaxis=dict(title=f"unit of {layer['layer']}", type="category", autorange="reversed",
                                 showticklabels=len(row_units) <= 64))
    st.plotly_chart(fig, config={"displayModeBar": False})
    st.caption("Each cell is the signed sum of the kernel from a unit of the input layer (column) to a unit of "
               "this layer (row), nonlinearities set aside; red excites, blue inhibits. Order by families to see "
               "groups of units that read the same inputs." + note)
