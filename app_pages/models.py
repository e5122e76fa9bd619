"""Models: one card per model in the store."""

import streamlit as st

from dashboard import data, html, links

COLUMNS = [("arch", "architecture"), ("source", "source"), ("revision", "revision"), ("input", "input"),
           ("layers", "#layers"), ("units", "#units"), ("computed", "computed")]

key = data.store_key()
st.title("Microscope")
st.caption("Every model in this store. Pick one to browse its layers, then any unit's dataset examples and "
           "statistics.")

models = data.models(key)
if not models:
    st.info("This store holds no models yet. Add one with `microscope precompute MODEL`.")
for m in models:
    mid = m["model_id"]
    with st.container(border=True):
        st.subheader(mid, anchor=False)
        if m["description"]:
            st.caption(m["description"])
        st.html(html.table(COLUMNS, [{
            "arch": m["arch"], "source": m["source"] + (f" ({m['hub_id']})" if m["hub_id"] else ""),
            "revision": m["revision"] or "–", "input": f"{m['input_size']} px", "layers": m["layer_count"],
            "units": f"{int(m['unit_count']):,}", "computed": ", ".join(m["techniques"] or []) or "nothing yet",
        }]))
        st.page_link(links.PAGES["model"], label=f"Browse {mid}", icon=":material/arrow_forward:",
                     query_params=links.params(mid))
