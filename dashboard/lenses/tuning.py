"""The `tuning` lens: a unit's responses to synthetic stimuli (gratings, curves, colour, edges, lines), as
curves against the varied parameter, polar plots for angles and hue, a heatmap over two parameters, and
the stimuli themselves (drawn here with store.stimuli, which is numpy-only) beside the plots."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, html
from dashboard.params import UnitRef, shown
from store.stimuli import FAMILIES

NAME = "tuning"
LABEL = "Tuning curves"
KEEP = ()

THUMB_PX = 96
PLOT = dict(height=340, margin=dict(l=10, r=10, t=30, b=10))


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def unit_tuning(key: data.StoreKey, model_id: str, layer: str, unit: int) -> list[dict]:
    return data.open_store(*key).unit_tuning(model_id, layer, unit)


@st.cache_data(max_entries=512, show_spinner=False)
def thumbnail(family: str, size: int, setting: tuple[tuple[str, float], ...]) -> np.ndarray:
    """The centre of one stimulus as the model saw it (drawn at its input size), pixel for pixel: shrinking a
    fine grating would show moiré that the model never saw."""
    image = (FAMILIES[family].draw(size, **dict(setting)) * 255).round().astype(np.uint8)
    lo = max(0, (size - THUMB_PX) // 2)
    crop = image[lo: lo + THUMB_PX, lo: lo + THUMB_PX].copy()
    crop[[0, -1], :] = crop[:, [0, -1]] = 160  # a grey frame: white stimuli stay visible on a white page
    return crop


def label(axis: dict) -> str:
    return f"{axis['name']} ({axis['unit']})" if axis["unit"] else axis["name"]


def value_text(value: float, axis: dict) -> str:
    unit = {"deg": "°"}.get(axis["unit"], f" {axis['unit']}" if axis["unit"] else "")
    return f"{value:g}{unit}"


def through_peak(grid: np.ndarray, peak: tuple[int, ...], keep: tuple[int, ...]) -> np.ndarray:
    """The sub-grid over the `keep` axes with every other axis held at the peak's value."""
    return grid[tuple(slice(None) if d in keep else peak[d] for d in range(grid.ndim))]


def lines_figure(axes: list[dict], grid: np.ndarray, peak: tuple[int, ...], blank: float | None) -> go.Figure:
    """Response against the first axis, one line per value of the second (other axes at the peak), and the
    response to a blank grey field, the baseline that selectivity is measured above."""
    x = axes[0]
    fig = go.Figure()
    if len(axes) == 1:
        fig.add_trace(go.Scatter(x=x["values"], y=through_peak(grid, peak, (0,)), mode="lines+markers"))
    else:
        sub = through_peak(grid, peak, (0, 1))
        for j, value in enumerate(axes[1]["values"]):
            fig.add_trace(go.Scatter(x=x["values"], y=sub[:, j], mode="lines+markers",
                                     name=f"{axes[1]['name']} {value_text(value, axes[1])}"))
    if blank is not None:
        fig.add_hline(y=blank, line_dash="dot", line_color="#888", annotation_text="blank (grey field)",
                      annotation_position="bottom right")
    xaxis = dict(title=label(x))
    if x["unit"] == "deg":
        xaxis.update(tickmode="array", tickvals=list(range(0, int(x["period"] or 360) + 1, 45)), ticksuffix="°")
    fig.update_layout(xaxis=xaxis, yaxis_title="activation (spatial max)", legend=dict(orientation="h", y=-0.25),
                      **PLOT)
    return fig


def polar_figure(axis: dict, curve: np.ndarray, family: str, blank: float | None) -> go.Figure:
    """A circular axis as a polar plot, 0° to the right and counter-clockwise as in the stimuli; an
    orientation (period 180°) is drawn twice, at θ and θ + 180°, since both name the same orientation."""
    theta, r = list(axis["values"]), np.clip(curve - (blank or 0.0), 0, None)
    if axis["period"] == 180:
        theta, r = theta + [t + 180 for t in theta], np.concatenate([r, r])
    theta, r = theta + theta[:1], np.concatenate([r, r[:1]])
    marker = {}
    if family == "colour":
        from store.stimuli import hsv_to_rgb
        marker = dict(color=[f"rgb{tuple(int(c * 255) for c in hsv_to_rgb(t, 1, 1))}" for t in theta], size=9)
    fig = go.Figure(go.Scatterpolar(r=r, theta=theta, mode="lines+markers", marker=marker, line_color="#444",
                                    hovertemplate="%{theta}°: %{r:.3g}<extra></extra>"))
    fig.update_layout(polar=dict(angularaxis=dict(direction="counterclockwise", rotation=0, ticksuffix="°", dtick=45),
                                 radialaxis=dict(title="above blank")), showlegend=False, **PLOT)
    return fig


def heatmap_figure(axes: list[dict], grid: np.ndarray, peak: tuple[int, ...]) -> go.Figure:
    sub = through_peak(grid, peak, (0, 1))
    fig = go.Figure(go.Heatmap(z=sub.T, x=[value_text(v, axes[0]) for v in axes[0]["values"]],
                               y=[value_text(v, axes[1]) for v in axes[1]["values"]], colorscale="Viridis",
                               colorbar=dict(title="activation")))
    fig.update_layout(xaxis=dict(title=label(axes[0]), type="category"),
                      yaxis=dict(title=label(axes[1]), type="category"), **PLOT)
    return fig


def summary_rows(row: dict) -> list[dict]:
    rows = []
    for axis, pref, width, sel in zip(row["axes"], row["preferred"], row["width"], row["selectivity"]):
        rows.append({"parameter": label(axis), "preferred": value_text(pref, axis),
                     "width": "flat" if width is None else value_text(round(width, 1), axis),
                     "selectivity": "—" if sel is None else f"{sel:.2f}"})
    return rows


def render(ref: UnitRef) -> None:
    rows = {r["family"]: r for r in unit_tuning(ref.key, ref.model_id, ref.layer_name, ref.unit)}
    if not rows:
        st.info("No tuning curves are stored for this unit. Compute them with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques tuning`.")
        return
    families = sorted(rows, key=lambda f: list(FAMILIES).index(f) if f in FAMILIES else len(FAMILIES))
    requested = st.query_params.get("family")
    if requested and requested not in rows:
        st.warning(f"Unknown family {shown(requested)}; families: {', '.join(families)}.")
        del st.query_params["family"]
    family = st.segmented_control("Stimuli", families, key="family", bind="query-params", required=True,
                                  default="gratings" if "gratings" in rows else families[0])
    row = rows[family]
    axes, grid = row["axes"], np.asarray(row["response"], dtype=np.float64).reshape(row["shape"])
    peak = np.unravel_index(int(grid.argmax()), grid.shape)
    relative = f" = {row['relative']:.0%} of its top dataset activation" if row["relative"] is not None else ""
    st.caption(f"{FAMILIES[family].description if family in FAMILIES else family}. Activation is the maximum over "
               f"the unit's map; curves hold the other parameters at the best stimulus. Best response "
               f"{row['best']:.3g}{relative}; at the map's centre {row['best_centre']:.3g}.")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(lines_figure(axes, grid, peak, row["blank"]), config={"displayModeBar": False})
        if axes[0]["period"]:
            curve = through_peak(grid, peak, (0,))
            st.plotly_chart(polar_figure(axes[0], curve, family, row["blank"]), config={"displayModeBar": False})
        if len(axes) >= 2:
            st.plotly_chart(heatmap_figure(axes, grid, peak), config={"displayModeBar": False})
    with right:
        st.subheader("Summary", anchor=False)
        st.html(html.table([("parameter", "parameter"), ("preferred", "preferred"), ("width", "half-max width"),
                            ("selectivity", "#selectivity")], summary_rows(row)))
        st.caption("Selectivity: one minus circular variance of the curve above the unit's response to a blank "
                   "grey field, rectified (orientation on doubled angles); 0 is untuned, 1 rises above the blank "
                   "at one value only. Width: full width at half maximum.")
        if family in FAMILIES:
            stimuli(family, axes, grid, peak, ref.model["input_size"])


def stimuli(family: str, axes: list[dict], grid: np.ndarray, peak: tuple[int, ...], size: int) -> None:
    """The best stimulus, then the first axis swept with the others at the peak, each with its response."""
    st.subheader("Stimuli", anchor=False)
    values = [a["values"] for a in axes]
    picks = [peak] + [tuple(i if d == 0 else peak[d] for d in range(len(axes)))
                      for i in np.linspace(0, len(values[0]) - 1, min(8, len(values[0]))).round().astype(int)]
    images, captions = [], []
    for n, index in enumerate(picks):
        setting = tuple((a["name"], float(values[d][index[d]])) for d, a in enumerate(axes))
        images.append(thumbnail(family, size, setting))
        what = (", ".join(value_text(v, a) for (_, v), a in zip(setting, axes)) if n == 0
                else value_text(setting[0][1], axes[0]))
        captions.append(f"{'best: ' if n == 0 else ''}{what} → {grid[index]:.3g}")
    st.image(images[:1], caption=captions[:1], width=THUMB_PX, output_format="PNG")
    st.caption(f"{axes[0]['name'].capitalize()} swept, others at the best stimulus (centres of the "
               f"{size} px images, 1:1):")
    st.image(images[1:], caption=captions[1:], width=THUMB_PX, output_format="PNG")
