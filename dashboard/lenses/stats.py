"""The `stats` lens: the activation histogram, the summary statistics and the provenance of the runs."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import data, html
from dashboard.params import UnitRef

NAME = "stats"
LABEL = "Statistics"
KEEP = ()

STATS = [("mean", "mean"), ("std", "std"), ("min", "min"), ("max", "max"), ("p50", "median (p50)"),
         ("p90", "p90"), ("p99", "p99"), ("frac_positive", "fraction of images > 0")]


def histogram(stats: dict) -> go.Figure:
    counts = list(stats["hist_counts"])
    lo, hi = stats["hist_lo"], stats["hist_hi"]
    width = (hi - lo) / len(counts) if hi > lo else 1.0
    centers = [lo + width * (i + 0.5) for i in range(len(counts))]
    fig = go.Figure(go.Bar(x=centers, y=counts, width=width, marker_color="#ff8c00",
                           hovertemplate="%{x:.3g}: %{y} images<extra></extra>"))
    # Decades only, from just under one image: single-image bins stay visible on the log axis.
    top = math.log10(max(max(counts), 1)) + 0.15
    fig.update_layout(xaxis_title="spatial-max activation", bargap=0.05, height=320,
                      yaxis=dict(title="images (log)", type="log", range=[-0.35, top], dtick=1),
                      margin=dict(l=10, r=10, t=10, b=10))
    return fig


def render(ref: UnitRef) -> None:
    stats = data.unit_stats(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if stats is None:
        st.info("No statistics are stored for this unit. Compute them with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques stats`.")
    else:
        left, right = st.columns([2, 1])
        with left:
            st.subheader("Activation histogram", anchor=False)
            st.caption(f"Each image's maximum activation over the map, {stats['images']:,} images.")
            if stats["hist_counts"]:
                st.plotly_chart(histogram(stats), config={"displayModeBar": False})
        with right:
            st.subheader("Statistics", anchor=False)
            rows = [{"statistic": label, "value": html.number(stats[k])} for k, label in STATS]
            rows.append({"statistic": "dead (same response to every image)", "value": "yes" if stats["dead"] else "no"})
            st.html(html.table([("statistic", "statistic"), ("value", "#value")], rows))
    st.subheader("Provenance", anchor=False)
    runs = data.unit_runs(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if not runs:
        st.caption("No runs recorded for this unit.")
        return
    st.caption("The runs that produced what is stored for this unit.")
    st.dataframe(pd.DataFrame([{k: r[k] for k in ("technique", "dataset", "images_seen", "seed", "device",
                                                  "finished_at", "seconds", "run_id")} for r in runs]),
                 hide_index=True)
    for r in runs:
        with st.expander(f"{r['technique']} parameters"):
            st.json(r["params"])
