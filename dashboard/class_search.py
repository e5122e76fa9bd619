"""The search page's "units that vote for a class": a class name (`espresso`, `Egyptian cat`, or a class index
for a model without names), typed into its own box (URL parameter `votes`) or into the main search box as
`class:espresso`; the units of every model of the store whose stored up votes include that class, each a link
to its class votes."""

from __future__ import annotations

import streamlit as st

from dashboard import data, html, links, url_widgets

PREFIX = "class:"
LIMIT = 100


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def find(key: data.StoreKey, text: str) -> list[dict]:
    return data.open_store(*key).find_voters(text, limit=LIMIT)


def from_query(text: str) -> str | None:
    """The class words of a main-box query `class:WORDS`, None for any other query."""
    text = text.strip()
    return text[len(PREFIX):].strip() if text.lower().startswith(PREFIX) else None


def render(key: data.StoreKey, asked: str | None = None) -> None:
    """`asked`: the words of a `class:` query from the main box, which then fill this box's place."""
    st.subheader("Units that vote for a class", anchor=False)
    st.caption("Type a class name, such as `espresso` or `Egyptian cat` (every word must appear in the class's "
               "name), or a class index for a model without names; `class:espresso` in the box above does the "
               "same. Lists the units of every model whose strongest votes (the classes whose logits they raise "
               "most) include it.")
    text = asked if asked is not None else url_widgets.text(st, "Votes for class", "votes", placeholder="espresso")
    if not text.strip():
        return
    rows = find(key, text)
    if not rows:
        st.info(f"No unit's stored votes name a class matching {text.strip()!r}. Class votes come from "
                "`microscope precompute MODEL --techniques classes` (in `default`).")
        return
    st.caption(f"{len(rows)}{'+' if len(rows) == LIMIT else ''} votes for classes matching {text.strip()!r}, most "
               "distinctive first: by the vote's z-score over all the model's classes, since raw votes grow with "
               "the linearised path's gains and do not compare across layers.")
    st.html(html.table(
        [("unit", "unit"), ("class", "class"), ("rank", "#its vote"), ("weight", "#weight"), ("z", "#z-score")],
        [{"unit": {"href": links.unit_href(r["model_id"], r["layer"], r["unit"], view="classes"),
                   "text": links.unit_id(r["model_id"], r["alias"] or r["layer"], r["unit"])},
          "class": r["label"] or f"class {r['class_index']}", "rank": f"#{r['rank'] + 1}",
          "weight": f"{r['weight']:+.3g}", "z": html.number(r["z"])} for r in rows]))
