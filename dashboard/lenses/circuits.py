"""The `circuits` lens: the units that feed this one and the units it feeds, through the weights between
them ("Visualizing Weights", Distill 2021). Each neighbour shows its picture (feature visualisation where
rendered, else its top dataset crop), its signed weight, the kernel that connects the two units, and links
to its own page, which links straight back here."""

from __future__ import annotations

import io

import numpy as np
import streamlit as st
from PIL import Image

from dashboard import data, html, links, url_widgets
from dashboard.params import UnitRef, shown

NAME = "circuits"
LABEL = "Circuit neighbours"
KEEP = ("source",)  # the input layer shown

POSITIVE, NEGATIVE = (178, 24, 43), (33, 102, 172)  # ColorBrewer RdBu ends: red excites, blue inhibits
KERNEL_PX = 56

STYLE = """<style>
.ms-nb-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.ms-nb { display: block; text-decoration: none !important; color: inherit !important; border-radius: 6px;
  padding: 4px; border: 1px solid rgba(128, 128, 128, .25); }
.ms-nb:hover { border-color: #ff8c00; }
.ms-nb .ms-pics { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.ms-nb img, .ms-nb .ms-blank { width: 100%; aspect-ratio: 1; display: block; border-radius: 3px;
  background: rgba(128, 128, 128, .15); }
.ms-nb .ms-kernel { image-rendering: pixelated; }
.ms-nb .ms-label { display: flex; justify-content: space-between; font-size: 12px; padding: 3px 2px 0;
  font-variant-numeric: tabular-nums; }
.ms-nb .ms-w { font-weight: 600; }
</style>"""


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def neighbours(key: data.StoreKey, model_id: str, layer: str, unit: int) -> list[dict]:
    return data.open_store(*key).unit_circuits(model_id, layer, unit)


def kernel_png(kernel: np.ndarray, vmax: float) -> bytes:
    """A kernel as a small picture: red for positive weights, blue for negative, white for zero, on one scale
    shared by every kernel on the page so that their strengths compare."""
    t = np.clip(kernel / (vmax or 1.0), -1, 1)[..., None]
    white = np.array([247, 247, 247], dtype=np.float64)
    rgb = np.where(t >= 0, white + t * (np.array(POSITIVE) - white), white - t * (np.array(NEGATIVE) - white))
    image = Image.fromarray(rgb.round().astype(np.uint8)).resize((KERNEL_PX, KERNEL_PX), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def layer_label(layers: dict[str, dict], name: str) -> str:
    alias = layers.get(name, {}).get("alias")
    return alias or name


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def tiles(key: data.StoreKey, model_id: str, layer: str, unit: int, came: str) -> dict[tuple, list[dict]]:
    """{(direction, other layer): [tile, ...]} with every picture encoded: the lens's whole content."""
    rows = neighbours(key, model_id, layer, unit)
    layers = {entry["layer"]: entry for entry in data.layers(key, model_id)}
    kernels = {id(r): np.frombuffer(r["kernel"], dtype="<f4").reshape(r["kernel_h"], r["kernel_w"]) for r in rows}
    out: dict[tuple, list[dict]] = {}
    for group in dict.fromkeys((r["direction"], r["other_layer"]) for r in rows):
        members = [r for r in rows if (r["direction"], r["other_layer"]) == group]
        vmax = max(float(np.abs(kernels[id(r)]).max()) for r in members)
        thumbs = data.unit_pictures(key, model_id, group[1], tuple(sorted(r["other_unit"] for r in members)))
        out[group] = [{
            "href": links.unit_href(model_id, r["other_layer"], r["other_unit"], view=NAME, came=came),
            "name": f"{layer_label(layers, r['other_layer'])}:{r['other_unit']}", "weight": r["weight"],
            "norm": r["norm"], "thumb": thumbs.get(r["other_unit"]), "kernel": kernel_png(kernels[id(r)], vmax),
            "shape": f"{r['kernel_h']}×{r['kernel_w']}",
        } for r in members]
    return out


def gallery(items: list[dict]) -> str:
    parts = ['<div class="ms-nb-grid">']
    for t in items:
        colour = "rgb(%d, %d, %d)" % (POSITIVE if t["weight"] > 0 else NEGATIVE)
        picture = (f'<img src="{html.data_uri(t["thumb"])}" alt="{html.escape(t["name"])}" loading="lazy">'
                   if t["thumb"] else '<div class="ms-blank"></div>')
        parts.append(
            f'<a class="ms-nb" href="{html.escape(t["href"])}" target="_self" title="{html.escape(t["name"])} · '
            f'weight {t["weight"]:+.3g} · kernel norm {t["norm"]:.3g} · kernel {t["shape"]}">'
            f'<div class="ms-pics">{picture}<img class="ms-kernel" src="{html.data_uri(t["kernel"])}" '
            f'alt="kernel"></div><div class="ms-label"><b>{html.escape(t["name"])}</b>'
            f'<span class="ms-w" style="color: {colour}">{t["weight"]:+.3g}</span></div></a>')
    parts.append("</div>")
    return "".join(parts)


def section(title: str, note: str, items: list[dict]) -> None:
    positive = [t for t in items if t["weight"] > 0]
    negative = [t for t in items if t["weight"] < 0]
    st.subheader(title, anchor=False)
    st.caption(note)
    for label, group in (("Excitatory (positive weights)", positive), ("Inhibitory (negative weights)", negative)):
        if group:
            st.markdown(f"**{label}** · {len(group)}")
            st.html(STYLE + gallery(group))


def back_link(ref: UnitRef) -> None:
    """The unit the visitor came from (the `came` parameter, `LAYER:UNIT`), one click away."""
    came = st.query_params.get("came")
    if not came:
        return
    layer, _, unit = came.rpartition(":")
    known = data.layer(ref.key, ref.model_id, layer)
    if known is None or not unit.isdigit() or int(unit) >= known["units"]:
        st.warning(f"Unknown unit {shown(came)} to go back to.")
        return
    st.page_link(links.PAGES["unit"], label=f"Back to {links.unit_id(ref.model_id, known['layer'], int(unit))}",
                 icon=":material/arrow_back:",
                 query_params=links.params(ref.model_id, known["layer"], int(unit), view=NAME))


def render(ref: UnitRef) -> None:
    back_link(ref)
    sources = data.circuit_paths(ref.key, ref.model_id, ref.layer_name)
    rows = neighbours(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if not rows and not sources:
        st.info("No circuits are stored for this unit. Compute them with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques circuits`.")
        return
    layers = {entry["layer"]: entry for entry in data.layers(ref.key, ref.model_id)}
    groups = tiles(ref.key, ref.model_id, ref.layer_name, ref.unit, f"{ref.layer_name}:{ref.unit}")
    if sources:
        options = {p["source"]: f"{layer_label(layers, p['source'])}: "
                   + ("adjacent layer" if p["hops"] == 1 else f"expanded weights, {p['hops']} layers back")
                   for p in sources}
        source, _ = url_widgets.choice(st, "Input layer", options, "source", sources[0]["source"])
        path = next(p for p in sources if p["source"] == source)
        if path["status"] != "ok":
            st.warning(f"No weights from {source}: {path['message']}")
        else:
            cut = (path["support_h"], path["support_w"]) != (path["kernel_h"], path["kernel_w"])
            section(f"Inputs from {options[source]}",
                    f"Units of {source} that drive this one, strongest first: the weight is the signed sum of the "
                    f"kernel (the response to a uniform input), the kernel is drawn beside each unit's picture "
                    f"(red excites, blue inhibits; one scale per gallery), read at the centre of this unit's map"
                    + (f"; kernels span {path['support_h']}×{path['support_w']} cells, drawn cut to "
                       f"{path['kernel_h']}×{path['kernel_w']}" if cut else "")
                    + ". Nonlinearities are set aside, batch norm folded in.",
                    groups.get(("input", source), []))
    else:
        st.caption("This is the model's first layer: it reads the image, not another layer.")
    outputs = [(g, items) for g, items in groups.items() if g[0] == "output"]
    for (_, other), items in outputs:
        section(f"Outputs into {layer_label(layers, other)}",
                f"Units of {other} that this unit drives most, through the same kind of kernel.", items)
    if not outputs:
        st.caption("No output neighbours are stored: this is the last layer, or the path to the next one is not "
                   "linear.")
    run = rows[0]["run_id"] if rows else sources[0]["run_id"]
    st.caption(f"Made by run `{run}`; see `microscope unit {ref.model_id} {ref.layer_name} {ref.unit} --json`.")
