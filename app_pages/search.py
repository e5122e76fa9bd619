"""Search: jump to a unit by its id, or to a layer; Microscope-style `layer:unit` within a chosen model."""

import streamlit as st

from dashboard import data, links, search, tuning_search

key = data.store_key()
st.title("Search", anchor=False)
st.caption("Go to a unit by its id: `model@layer:unit`, or `layer:unit` in the chosen model, where the layer is "
           "its name or alias (`b3:12`). A layer name alone opens its gallery.")

models = [m["model_id"] for m in data.models(key)]
if not models:
    st.info("This store holds no models yet.")
    st.stop()
wanted = st.query_params.get("model")
with st.form("search"):
    cols = st.columns([2, 3, 1], vertical_alignment="bottom")
    model = cols[0].selectbox("Model", models, index=models.index(wanted) if wanted in models else 0)
    text = cols[1].text_input("Unit or layer", value=st.query_params.get("q", ""), placeholder="b3:12")
    submitted = cols[2].form_submit_button("Go", icon=":material/search:", width="stretch")

if submitted or text:
    result = search.resolve(key, text, model)
    if result.page and submitted:
        st.switch_page(links.PAGES[result.page], query_params=result.query)
    if result.page:
        st.page_link(links.PAGES[result.page], label=result.label, icon=":material/arrow_forward:",
                     query_params=result.query)
    else:
        st.error(result.error, icon=":material/search_off:")
        for page, query, label in result.suggestions:
            st.page_link(links.PAGES[page], label=f"Did you mean {label}?", query_params=query)

with st.expander(f"Layers of {model}", expanded=not text):
    st.markdown("  \n".join(f"`{l['alias'] or l['layer']}` = `{l['layer']}` · units 0 to {l['units'] - 1}"
                            for l in data.layers(key, model)))

tuning_search.render(key, model)
