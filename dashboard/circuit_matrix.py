"""The layer page's weight matrix: every unit of the layer against every unit of a layer that feeds it (the
circuits technique's signed kernel sums), as a heatmap whose rows and columns can be reordered so that
families of units (units that read the same inputs) show as blocks."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import data
from dashboard.params import url_choice

MAX_CELLS = 160_000  # beyond this the heatmap is slow to draw in a browser: the strongest rows and columns stay
SORTS = {
    "unit": "unit number",
    "family": "families (similar weight patterns together)",
    "strongest": "strongest input (rows), unit number (columns)",
}


@st.cache_data(max_entries=8, ttl=600, show_spinner=False)
def matrix(key: data.StoreKey, model_id: str, layer: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(units of the layer, weights (units, source units))."""
    frame = data.open_store(*key).circuit_matrix(model_id, layer, source)
    if frame.empty:
        return np.zeros(0, dtype=int), np.zeros((0, 0), dtype=np.float32)
    return frame["unit"].to_numpy(), np.stack([np.asarray(w, dtype=np.float32) for w in frame["weights"]])


def family_order(m: np.ndarray) -> np.ndarray:
    """Rows ordered by the angle of their projection on the two leading principal axes of the row-normalised
    matrix: rows with similar patterns sit at similar angles, so families become contiguous blocks."""
    if len(m) < 3:
        return np.arange(len(m))
    x = m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    angle = np.arctan2(u[:, 1] * s[1], u[:, 0] * s[0]) if u.shape[1] > 1 else u[:, 0]
    return np.argsort(angle, kind="stable")


def ordered(units: np.ndarray, m: np.ndarray, sort: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row units, column units, matrix) in the chosen order."""
    cols = np.arange(m.shape[1])
    if sort == "family":
        rows, cols = family_order(m), family_order(m.T)
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
    source, _ = url_choice(cols[0], "Input layer", options, "wsource", usable[0]["source"])
    sort, _ = url_choice(cols[1], "Order", SORTS, "wsort", "unit")
    units, m = matrix(key, model_id, layer["layer"], source)
    if not len(units):
        st.info(f"No weight matrix from {source} is stored.")
        return
    columns = np.arange(m.shape[1])
    note = ""
    if m.size > MAX_CELLS:
        total = m.shape
        units, columns, m = strongest(units, m, MAX_CELLS)
        note = (f" Showing the {len(units):,} rows and {len(columns):,} columns with the largest weights "
                f"(of {total[0]:,} × {total[1]:,}).")
    row_units, order, shown = ordered(units, m, sort)
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
