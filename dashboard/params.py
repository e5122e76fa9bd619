"""Reads model, layer and unit from the URL. A missing, unknown or malformed value stops the page with one
clear message and a link back up: never a traceback. Values only ever reach the store as bound parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

import streamlit as st

from dashboard import data, links


@dataclass(frozen=True)
class UnitRef:
    key: data.StoreKey
    model: dict
    layer: dict
    unit: int

    @property
    def model_id(self) -> str:
        return self.model["model_id"]

    @property
    def layer_name(self) -> str:
        return self.layer["layer"]

    @property
    def id(self) -> str:
        return links.unit_id(self.model_id, self.layer_name, self.unit)


def shown(value: str, limit: int = 80) -> str:
    """A user-typed value, safe inside a markdown message: one line, no backticks, bounded length."""
    text = " ".join(str(value).split()).replace("`", "'")
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"`{text}`" if text else "(empty)"


def fail(message: str, label: str, page: str, query: dict[str, str] | None = None) -> NoReturn:
    st.error(message, icon=":material/error:")
    st.page_link(links.PAGES[page], label=label, icon=":material/arrow_back:", query_params=query)
    st.stop()


def model(key: data.StoreKey) -> dict:
    raw = st.query_params.get("model")
    if not raw:
        fail("No model given: this page needs `?model=ID`.", "All models", "models")
    found = data.model(key, raw)
    if found is None:
        fail(f"Unknown model {shown(raw)}: this store has no such model.", "All models", "models")
    return found


def layer(key: data.StoreKey, model: dict) -> dict:
    raw = st.query_params.get("layer")
    back = links.params(model["model_id"])
    if not raw:
        fail(f"No layer given: this page needs `&layer=NAME` (a layer of {shown(model['model_id'])}).",
             f"Layers of {model['model_id']}", "model", back)
    found = data.layer(key, model["model_id"], raw)
    if found is None:
        fail(f"Unknown layer {shown(raw)} in model {shown(model['model_id'])}.",
             f"Layers of {model['model_id']}", "model", back)
    return found


def unit(key: data.StoreKey) -> UnitRef:
    m = model(key)
    layer_row = layer(key, m)
    raw = st.query_params.get("unit")
    count = layer_row["units"]
    back = links.params(m["model_id"], layer_row["layer"])
    span = f"0 to {count - 1}"
    if raw is None or not raw.strip():
        fail(f"No unit given: layer {shown(layer_row['layer'])} has units {span}.",
             f"All units of {layer_row['layer']}", "layer", back)
    if not re.fullmatch(r"\d{1,9}", raw.strip()):
        fail(f"Bad unit {shown(raw)}: a unit is a whole number from {span}.", f"All units of {layer_row['layer']}",
             "layer", back)
    number = int(raw.strip())
    if number >= count:
        fail(f"Unit {number} is out of range: layer {shown(layer_row['layer'])} has units {span}.",
             f"All units of {layer_row['layer']}", "layer", back)
    canonical(links.params(m["model_id"], layer_row["layer"], number))
    return UnitRef(key, m, layer_row, number)


def canonical(query: dict[str, str]) -> None:
    """Writes the resolved model/layer/unit back to the URL (an alias becomes the layer's name). Besides
    canonical links, this makes the browser show the new URL after an st.page_link to the page already open
    (prev/next): Streamlit 1.67 reruns with the link's params but leaves the address bar as it was."""
    for name, value in query.items():
        st.query_params[name] = value

