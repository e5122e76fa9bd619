"""The `classes` lens: what a unit votes for. The classes whose logits it raises and lowers most through the
linearised path to the classifier, as ranked bars with their labels, and the classes the model predicts most
often on the unit's top dataset images; or why the layer has no votes (a path that is not linear)."""

from __future__ import annotations

import streamlit as st

from dashboard import data, html
from dashboard.params import UnitRef

NAME = "classes"
LABEL = "Class votes"
KEEP = ()

UP, DOWN, PREDICTED = "#b2182b", "#2166ac", "#ff8c00"  # ColorBrewer RdBu ends, as the circuits lens
STYLE = """<style>
.ms-votes { width: 100%; border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; }
.ms-votes td { padding: 3px 6px; border-bottom: 1px solid rgba(128, 128, 128, .15); vertical-align: middle; }
.ms-votes td.rank { opacity: .6; width: 2em; text-align: right; }
.ms-votes td.name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; max-width: 16em; }
.ms-votes td.bar { width: 40%; }
.ms-votes td.bar div { height: 12px; border-radius: 2px; }
.ms-votes td.num { text-align: right; width: 6em; }
</style>"""


@st.cache_data(max_entries=256, ttl=600, show_spinner=False)
def record(key: data.StoreKey, model_id: str, layer: str, unit: int) -> dict | None:
    return data.open_store(*key).classes_record(model_id, layer, unit)


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def path(key: data.StoreKey, model_id: str, layer: str) -> dict | None:
    return data.open_store(*key).class_path(model_id, layer)


def class_name(item: dict) -> str:
    """A class by its label, or by its index where the model has no class names."""
    return f"{item['label']} ({item['index']})" if item["label"] else f"class {item['index']}"


def bars(items: list[dict], value: str, colour: str, scale: float, text) -> str:
    """A ranked list with one bar per class, its length on a scale shared by the lists it is compared with."""
    rows = []
    for rank, item in enumerate(items, 1):
        width = 100 * abs(item[value]) / scale if scale else 0
        name = class_name(item)
        rows.append(f'<tr><td class="rank">{rank}</td><td class="name" title="{html.escape(name)}">'
                    f'{html.escape(name)}</td><td class="bar"><div style="width: {width:.1f}%; '
                    f'background: {colour}"></div></td><td class="num">{html.escape(text(item[value]))}</td></tr>')
    return f'{STYLE}<table class="ms-votes"><tbody>{"".join(rows)}</tbody></table>'


def render(ref: UnitRef) -> None:
    votes = record(ref.key, ref.model_id, ref.layer_name, ref.unit)
    if votes is None:
        st.info("No class votes are stored for this unit. Compute them with "
                f"`microscope precompute {ref.model_id} --layers {ref.layer_name} --techniques classes`.")
        return
    layer_path = path(ref.key, ref.model_id, ref.layer_name) or {}
    st.caption("A vote is the change in each class's logit when this unit's whole map rises by 1, with ReLUs "
               "taken as identity and batch norm folded: exact for a layer right before the pooled linear head, the "
               "sum of the expanded weights through the layers between otherwise. Its scale grows with the "
               "linearised path's gains, so compare votes within a unit, not across layers.")
    if concentrated := data.concentrated_votes(ref.key, ref.model_id, ref.layer_name):
        st.warning(concentrated, icon=":material/info:")
    if votes.get("status"):
        st.warning(f"No class votes for this layer: {votes['message']}")
    else:
        scale = max((abs(v["weight"]) for v in votes["up"] + votes["down"]), default=0.0)
        left, right = st.columns(2)
        for column, title, items, colour in ((left, "Raises", votes["up"], UP), (right, "Lowers", votes["down"], DOWN)):
            with column:
                st.subheader(title, anchor=False)
                if items:
                    st.html(bars(items, "weight", colour, scale, lambda w: f"{w:+.3g}"))
                else:
                    st.caption("No class's logit moves this way.")
    st.subheader("Predicted on its top images", anchor=False)
    tops = layer_path.get("top_images")
    if votes["predicted"]:
        total = sum(p["count"] for p in votes["predicted"])
        st.caption(f"The classes the model predicts (top-1) most often for the images that excite this unit most "
                   f"({total} of its top {tops or total} images shown).")
        st.html(bars(votes["predicted"], "count", PREDICTED, max(p["count"] for p in votes["predicted"]),
                     lambda c: f"{c} ×"))
    else:
        st.caption("No predictions are stored: the model does not output class logits, or the unit has no top "
                   "images.")
    if not layer_path.get("labeled", True):
        st.caption(f"This model has no class names: classes are shown by index (0 to "
                   f"{(layer_path.get('classes') or 1) - 1}).")
    where = layer_path.get("classifier")
    run = layer_path.get("run_id")
    st.caption((f"Classifier: `{where or 'the model itself'}`. " if where is not None else "")
               + (f"Made by run `{run}`; " if run else "")
               + f"see `microscope unit {ref.model_id} {ref.layer_name} {ref.unit} --json`.")
