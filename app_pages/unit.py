"""Unit: one unit seen through a lens (dataset examples, statistics), with prev/next and a deep link."""

import streamlit as st

from dashboard import chrome, data, links, notes_panel, params
from dashboard.lenses import DEFAULT, LENSES

key = data.store_key()
ref = params.unit(key)
embed = chrome.is_embed()
mid, name, layer = ref.model_id, ref.layer_name, ref.layer
requested = st.query_params.get("view")

st.header(ref.id, anchor=False)
what = ("one feature of a sparse dictionary of its base layer, a direction over that layer's channels (dictionary)"
        if "/" in name else "one channel of its activation map")
st.caption(f"Unit {ref.unit} of layer {name}: {what}. The lenses show what makes it "
           "fire (dataset examples with heatmaps, images optimised for it, responses to synthetic stimuli) and how "
           "it fires (activation statistics), which units feed it and which it feeds (circuits), which units "
           "respond alike in any model of the store (similar), and which classes it votes for (classes).")
if embed:
    st.markdown(f"[Open in Microscope]({links.deep_link(st.context.url, links.params(mid, name, ref.unit))})")
else:
    facts = [f"alias `{layer['alias']}`" if layer["alias"] else None, f"{layer['units']:,} units",
             f"map {layer['height']}×{layer['width']}", f"receptive field {layer['rf_px']} px"]
    st.markdown(" · ".join(f for f in facts if f))
nav = st.container()  # filled below, once the lens (which links keep) is known

# No format_func: a bound widget puts the formatted option in the URL, and the URL must say `view=stats`.
view = st.segmented_control("Lens", list(LENSES), key="view", bind="query-params", required=True, default=DEFAULT,
                            help=" · ".join(f"{k}: {lens.LABEL}" for k, lens in LENSES.items()))
lens = LENSES[view]
if requested and requested not in LENSES:
    st.warning(f"Unknown view {params.shown(requested)}; showing {lens.LABEL.lower()}. "
               f"Views: {', '.join(LENSES)}.")
# Prev/next keep the lens and the lens's own settings (the dataset lens's heatmap switch, ...).
keep = {"view": view if view != DEFAULT else None, **{name: st.query_params.get(name) for name in lens.KEEP}}

if not embed:
    row = nav.container(horizontal=True, vertical_alignment="center")
    for other, label, icon in ((ref.unit - 1, "Previous unit", ":material/chevron_left:"),
                               (ref.unit + 1, "Next unit", ":material/chevron_right:")):
        row.page_link(links.PAGES["unit"], label=label, icon=icon, disabled=not 0 <= other < layer["units"],
                      query_params=links.params(mid, name, min(max(other, 0), layer["units"] - 1), **keep))
    row.page_link(links.PAGES["layer"], label=f"All units of {name}", icon=":material/grid_view:",
                  query_params=links.params(mid, name))
    row.page_link(links.PAGES["model"], label=f"Layers of {mid}", icon=":material/account_tree:",
                  query_params=links.params(mid))
    nav.code(links.deep_link(st.context.url, links.params(mid, name, ref.unit, **keep)), language=None,
             wrap_lines=True)

lens.render(ref)
if not embed:
    notes_panel.render(ref)
