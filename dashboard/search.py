"""Parsing and resolving what a user types into the search box, kept free of widgets so it is easy to test.

Accepted: `model@layer:unit` (any model), `layer:unit` within the chosen model (`b3:12`, Microscope style),
`model@layer` or `layer` (the layer gallery), or a model id alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dashboard import data, links
from dashboard.params import shown


@dataclass
class Result:
    page: str | None = None                 # where to go when the query names exactly one place
    query: dict[str, str] = field(default_factory=dict)
    label: str = ""
    error: str = ""
    suggestions: list[tuple[str, dict[str, str], str]] = field(default_factory=list)  # (page, query, label)


def split(text: str) -> tuple[str | None, str, str | None]:
    """(model or None, layer, unit text or None). Model ids may hold '@' and ':', layer names never do."""
    model = None
    if "@" in text:
        model, text = text.rsplit("@", 1)
    layer, sep, unit = text.partition(":")
    return model, layer.strip(), unit.strip() if sep else None


def resolve(key: data.StoreKey, text: str, chosen_model: str | None) -> Result:
    text = text.strip()
    if not text:
        return Result(error="Type a unit such as `b3:12` or `MODEL@LAYER:UNIT`.")
    if data.model(key, text):
        return Result("model", links.params(text), f"model {text}")
    model_id, layer_text, unit_text = split(text)
    model_id = model_id.strip() if model_id is not None else chosen_model
    if not model_id or data.model(key, model_id) is None:
        return Result(error=f"Unknown model {shown(model_id or '')}. "
                            "Write `MODEL@LAYER:UNIT` with a model of this store.")
    if not layer_text:
        return Result(error="Missing layer: write `LAYER:UNIT`, e.g. `b3:12`.")
    layer = data.layer(key, model_id, layer_text)
    if layer is None:
        others = [r for r in data.find_layer(key, layer_text) if r["model_id"] != model_id]
        return Result(error=f"No layer {shown(layer_text)} in model {shown(model_id)}.", suggestions=[
            ("layer", links.params(r["model_id"], r["layer"]), f"{r['model_id']}@{r['layer']}") for r in others])
    name = layer["layer"]
    if unit_text is None:
        return Result("layer", links.params(model_id, name), f"{model_id}@{name}")
    if not re.fullmatch(r"\d{1,9}", unit_text):
        return Result(error=f"Bad unit {shown(unit_text)}: a unit is a whole number from 0 to {layer['units'] - 1}.")
    unit = int(unit_text)
    if unit >= layer["units"]:
        return Result(error=f"Unit {unit} is out of range: layer {shown(name)} has units 0 to {layer['units'] - 1}.")
    return Result("unit", links.params(model_id, name, unit), links.unit_id(model_id, name, unit))
