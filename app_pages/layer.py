"""Layer: a gallery of every unit, each shown by the crop of its top dataset example; sort, filter, page."""

import math

import streamlit as st

from dashboard import circuit_matrix, data, dictionary_panel, html, links, notes, params, tuning_search, url_widgets
from store.queries import STAT_COLUMNS

PER_PAGE = 128

key = data.store_key()
model = params.model(key)
layer = params.layer(key, model)
params.canonical(links.params(model["model_id"], layer["layer"]))
mid, name = model["model_id"], layer["layer"]

st.title(f"{mid}@{name}", anchor=False)
st.caption("Every unit of this layer, shown by the image patch that excites it most (and, where class votes "
           "are computed, the class it raises most: ↑). Sort and filter by the unit statistics; click a unit for "
           "its examples, heatmaps and histogram.")
facts = [f"alias `{layer['alias']}`" if layer["alias"] else None, f"{layer['units']:,} units",
         f"map {layer['height']}×{layer['width']}", f"receptive field {layer['rf_px']} px",
         f"{layer['dead_units']:,} dead"]
st.markdown(" · ".join(f for f in facts if f))
partner = data.closest_layer(key, mid, name)
if partner:
    st.page_link(links.PAGES["compare"], label=f"Compare with {links.side(*partner)}, the most similar layer (CKA)",
                 icon=":material/compare:", query_params=links.compare_params(mid, name, *partner))

# "-max" sorts by max activation, highest first; each statistic is offered in both directions.
SORTS = {"unit": "unit, ascending", "-unit": "unit, descending"}
for col, label in STAT_COLUMNS.items():
    if col != "unit":
        SORTS[f"-{col}"] = f"{label}, highest first"
        SORTS[col] = f"{label}, lowest first"
tuned = tuning_search.layer_tuning(key, mid, name)  # orientation, hue, ... selectivity per unit, if computed
SORTS.update(tuning_search.gallery_sorts(tuned))


def first_page() -> None:
    st.session_state["page"] = 1


cols = st.columns([3, 2, 2])
sort, resorted = url_widgets.choice(cols[0], "Sort by", SORTS, "sort", "unit")
if resorted:
    first_page()
min_pos = cols[1].number_input("Min fraction of images > 0", min_value=0.0, max_value=1.0, value=0.0, step=0.05,
                               key="min_pos", bind="query-params", on_change=first_page)
cols[2].write("")
hide_dead = cols[2].toggle("Hide dead units", key="hide_dead", bind="query-params", on_change=first_page)

badges, families, notes_problem = notes.layer_badges(mid, name)  # the team's labels and families, if reachable
if notes_problem:
    st.caption(notes_problem)
in_family = notes.family_filter(st, families, on_change=first_page)  # &family=NAME
grouped = bool(families) and st.toggle("Group by family", key="group", bind="query-params",
                                       help="Show the units of each family together, under its name")
units = data.layer_units(key, mid, name)
if len(tuned):
    units = units.merge(tuned, on="unit", how="left")
shown = units
if hide_dead:
    shown = shown[~shown["dead"]]
if min_pos > 0:
    shown = shown[shown["frac_positive"] >= min_pos]
if in_family is not None:
    shown = shown[shown["unit"].isin(in_family)]
column = sort.lstrip("-")
if column.endswith("_sel"):  # sorting by a tuning selectivity offers a threshold on it
    min_sel = st.number_input(f"Min {tuning_search.column_label(column)}", min_value=0.0, max_value=1.0, value=0.0,
                              step=0.05, key="min_sel", bind="query-params", on_change=first_page)
    shown = shown[shown[column] >= min_sel] if min_sel > 0 else shown
shown = shown.sort_values([column, "unit"], ascending=[not sort.startswith("-"), True], na_position="last")

pages = max(1, math.ceil(len(shown) / PER_PAGE))
top = st.container()
page = st.pagination(pages, key="page", bind="query-params")
chunk = shown.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]
rendered = data.thumbnails(key, mid, name, layer["units"], "channel")
# Each unit's feature visualisation where it was rendered, else the crop of its top dataset example.
show = st.segmented_control("Thumbnails", ["featurevis", "dataset"], key="thumbs", bind="query-params",
                            default="featurevis" if rendered else "dataset", required=True,
                            help="featurevis: the image optimised for the unit; dataset: its top dataset crop")
thumbs = {**data.thumbnails(key, mid, name, layer["units"]), **(rendered if show == "featurevis" else {})}
votes = data.layer_votes(key, mid, name)  # each tile names the class its unit raises most, where computed
if concentrated := data.concentrated_votes(key, mid, name):
    st.caption(concentrated)
top.caption(f"{len(shown):,} of {len(units):,} units match · page {page} of {pages} · showing "
            f"{len(chunk):,} units")

if chunk.empty:
    st.info("No unit matches these filters. Lower the minimum fraction or show dead units.")
for title, rows in [] if chunk.empty else notes.by_family(chunk, families) if grouped else [(None, chunk)]:
    if title:
        st.subheader(title, anchor=False)
    st.html(html.gallery([
        {"href": links.unit_href(mid, name, int(r.unit)), "unit": int(r.unit), "max": r.max, "dead": bool(r.dead),
         "thumb": thumbs.get(int(r.unit)), "vote": votes.get(int(r.unit)), **badges.get(int(r.unit), {})}
        for r in rows.itertuples(index=False)
    ]))
visuals = data.layer_visuals(key, mid, name)
if visuals:
    st.subheader("DeepDream and caricatures", anchor=False)
    st.caption("Images optimised for the whole layer: DeepDream raises all of its activations; a caricature "
               "exaggerates what the layer sees in a photo (shown beside it).")
    tiles = []
    for v in visuals:
        if v["source_image"]:
            tiles.append({"src": html.data_uri(v["source_image"]), "caption": "photo", "source": v["source"]})
        tiles.append({"src": html.data_uri(v["image"]), "caption": v["technique"], "source": v["source"]})
    st.html(html.examples(tiles))
dictionary_panel.render(key, mid, name)
circuit_matrix.render(key, mid, layer, data.circuit_paths(key, mid, name))
if layer["dataset_units"] < layer["units"]:
    st.caption(f"Dataset examples were computed for {layer['dataset_units']:,} of {layer['units']:,} units; "
               "the others show a blank tile.")
