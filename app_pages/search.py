"""Search: jump to a unit by its id, or to a layer; Microscope-style `layer:unit` within a chosen model; find
units by tuning or by the class they vote for (`class:espresso`). Its whole state is in the URL (`q`, `model`, the
tuning filters, `votes`): a search is a link."""

import streamlit as st

from dashboard import class_search, data, links, notes_panel, search, tuning_search, url_widgets

key = data.store_key()
st.title("Search", anchor=False)
st.caption("Go to a unit by its id: `model@layer:unit`, or `layer:unit` in the chosen model, where the layer is "
           "its name or alias (`b3:12`). A layer name alone opens its gallery; `class:espresso` lists the units "
           "that vote for a class. Other words find units by their labels, notes and families, in every model.")

models = [m["model_id"] for m in data.models(key)]
if not models:
    st.info("This store holds no models yet.")
    st.stop()
cols = st.columns([2, 4], vertical_alignment="bottom")
# The model stays in the URL even when it is the first one: a shared link must not depend on the store's order.
model, model_changed = url_widgets.choice(cols[0], "Model", {m: m for m in models}, "model", models[0],
                                          drop_default=False)
with cols[1].form("search", border=False):
    inner = st.columns([3, 1], vertical_alignment="bottom")
    text = url_widgets.text(inner[0], "Unit or layer", "q", placeholder="b3:12")
    submitted = inner[1].form_submit_button("Go", icon=":material/search:", width="stretch")

votes = class_search.from_query(text)  # `class:espresso`: the class-vote search below answers it
if (submitted or text) and votes is None:
    result = search.resolve(key, text, model)
    if result.page and submitted:
        st.switch_page(links.PAGES[result.page], query_params=result.query)
    if result.page:
        st.page_link(links.PAGES[result.page], label=result.label, icon=":material/arrow_forward:",
                     query_params=result.query)
    elif not notes_panel.search_results(text):  # words of labels, notes and families; else the id's error
        st.error(result.error, icon=":material/search_off:")
        for page, query, label in result.suggestions:
            st.page_link(links.PAGES[page], label=f"Did you mean {label}?", query_params=query)

with st.expander(f"Layers of {model}", expanded=not text):
    st.markdown("  \n".join(f"`{layer['alias'] or layer['layer']}` = `{layer['layer']}` · "
                            f"units 0 to {layer['units'] - 1}"
                            for layer in data.layers(key, model)))

notes_panel.starred()
notes_panel.orphans(key)
tuning_search.render(key, model, model_changed)
class_search.render(key, votes)
