"""The `dataset` lens: the images (crops) that excite a unit most and least, and a quantile sample."""

from __future__ import annotations

import streamlit as st

from dashboard import data, examples, html
from dashboard.params import UnitRef

NAME = "dataset"
LABEL = "Dataset examples"
KEEP = ("heat",)  # the heatmap switch

SECTIONS = {
    "top": ("Top examples", "where the unit fires most; orange marks where in the crop"),
    "bottom": ("Bottom examples", "the images it responds to least; heat on the same scale as the top one"),
    "quantile": ("Quantile sample", "images spread over the unit's activation distribution, labelled by quantile "
                                    "(no heatmap)"),
}


def render(ref: UnitRef) -> None:
    heat = st.toggle("Heatmap overlay", value=True, key="heat", bind="query-params",
                     help="Tint each crop by where the unit is active, scaled to the top example's activation.")
    tiles = examples.unit_tiles(ref.key, ref.model_id, ref.layer_name, ref.unit, heat)
    if not any(tiles.values()):
        st.info("No dataset examples are stored for this unit. Compute them with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques dataset`.")
        return
    for kind, (title, note) in SECTIONS.items():
        if tiles[kind]:
            st.subheader(f"{title} ({len(tiles[kind])})", anchor=False)
            if not heat:
                note = note.split(";")[0].replace(" (no heatmap)", "")
            st.caption(f"{note}. Caption: spatial-max activation; hover for the source image.")
            st.html(html.examples(tiles[kind]))
    run = next((r for r in data.unit_runs(ref.key, ref.model_id, ref.layer_name, ref.unit)
                if r["technique"] == "dataset"), None)
    if run:
        st.caption(f"Made by run `{run['run_id']}` over dataset `{run['dataset']}` ({run['images_seen']:,} images), "
                   f"seed {run['seed']}, on {run['device']}, finished {run['finished_at']:%Y-%m-%d %H:%M}.")
