"""The `similar` lens: the units that respond most like this one, in its layer, in the model's other layers and
in the store's other models, each with its picture, its correlation and a link; and the way to the compare view
of this layer and the layers those units live in."""

from __future__ import annotations

import streamlit as st

from dashboard import data, html, links
from dashboard.params import UnitRef

NAME = "similar"
LABEL = "Similar units"
KEEP = ()

MEASURE = ("The score is the correlation (Pearson) of the two units' responses, each unit's spatial-max "
           "activation, over the same {images} dataset images: 1 means they rise and fall together on every image. "
           "It is computed across the whole store when it is built, so units of models added later are here too.")


def _label(layers: dict[str, dict], model_id: str, layer: str) -> str:
    alias = layers.get((model_id, layer), {}).get("alias")
    return alias or layer


def _tiles(ref: UnitRef, rows: list[dict]) -> list[dict]:
    layers = {(m, entry["layer"]): entry for m in {r["model"] for r in rows} for entry in data.layers(ref.key, m)}
    pictures: dict[tuple[str, str], dict[int, bytes]] = {}
    for model_id, layer in dict.fromkeys((r["model"], r["layer"]) for r in rows):
        units = tuple(sorted({r["unit"] for r in rows if (r["model"], r["layer"]) == (model_id, layer)}))
        pictures[(model_id, layer)] = data.unit_pictures(ref.key, model_id, layer, units)
    return [{"href": links.unit_href(r["model"], r["layer"], r["unit"], view=NAME),
             "name": f"{_label(layers, r['model'], r['layer'])}:{r['unit']}", "value": f"{r['score']:.2f}",
             "title": f"{links.unit_id(r['model'], r['layer'], r['unit'])} · correlation {r['score']:.3f}",
             "thumb": pictures[(r["model"], r["layer"])].get(r["unit"])} for r in rows]


def _compare_link(ref: UnitRef, model_id: str, layer: str) -> None:
    st.page_link(links.PAGES["compare"], label=f"Match all units of {ref.layer_name} with {model_id}@{layer}",
                 icon=":material/compare:", query_params=links.compare_params(ref.model_id, ref.layer_name, model_id,
                                                                               layer))


def render(ref: UnitRef) -> None:
    rows = data.unit_similar(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if rows is None:
        st.info("No responses are stored for this unit, so nothing to compare it with. Compute them with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques similar`.")
        return
    run = next((r for r in data.unit_runs(ref.key, ref.model_id, ref.layer_name, ref.unit)
                if r["technique"] == NAME), None)
    images = run["params"].get("sample_images") if run else None
    seen = min(images, run["images_seen"]) if run and images and run["images_seen"] else "the"
    st.caption(MEASURE.format(images=f"{seen:,}" if isinstance(seen, int) else seen))
    if not rows:
        st.info("This unit's response does not vary over the images (a dead unit), or no other unit was sampled "
                "on the same images: it has no similar units.")
        return
    here = [r for r in rows if r["scope"] == "layer"]
    model = [r for r in rows if r["scope"] == "model"]
    if here:
        st.subheader(f"In {ref.layer_name}", anchor=False)
        st.html(html.named_tiles(_tiles(ref, here)))
    if model:
        st.subheader(f"In other layers of {ref.model_id}", anchor=False)
        st.html(html.named_tiles(_tiles(ref, model)))
    for other in dict.fromkeys(r["model"] for r in rows if r["scope"] == "store"):
        group = [r for r in rows if r["model"] == other and r["scope"] == "store"]
        st.subheader(f"In {other}", anchor=False)
        st.html(html.named_tiles(_tiles(ref, group)))
        _compare_link(ref, other, group[0]["layer"])
    if not any(r["scope"] == "store" for r in rows):
        st.caption("No other model of this store was shown the same images; precompute one into this store (same "
                   "dataset) to see its units here.")
    if here:
        _compare_link(ref, ref.model_id, ref.layer_name)
    if run:
        st.caption(f"Responses sampled by run `{run['run_id']}` over dataset `{run['dataset']}`; see "
                   f"`microscope unit {ref.model_id} {ref.layer_name} {ref.unit} --json` (key `similar`).")
