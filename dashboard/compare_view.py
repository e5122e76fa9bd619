"""What the compare page draws: the matched pairs of two layers side by side, and the layer-by-layer CKA map of
two models. Kept apart from the page so that the page stays a thin reading of the URL."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import data, html, links


def pair_tiles(key: data.StoreKey, a: tuple[str, str], b: tuple[str, str], pairs: list[dict]) -> list[dict]:
    pics_a = data.unit_pictures(key, *a, tuple(sorted(p["a"] for p in pairs)))
    pics_b = data.unit_pictures(key, *b, tuple(sorted(p["b"] for p in pairs)))

    def side(model_layer, unit, pictures):
        model_id, layer = model_layer
        return {"href": links.unit_href(model_id, layer, unit, view="similar"), "name": str(unit),
                "thumb": pictures.get(unit)}

    return [{"a": side(a, p["a"], pics_a), "b": side(b, p["b"], pics_b), "value": f"{p['score']:.2f}",
             "title": f"{links.unit_id(*a, p['a'])} ↔ {links.unit_id(*b, p['b'])} · correlation {p['score']:.3f}"}
            for p in pairs]


def render_pairs(key: data.StoreKey, a: tuple[str, str], b: tuple[str, str], pairs: list[dict]) -> None:
    st.html(html.pairs(pair_tiles(key, a, b, pairs)))


def cka_map(key: data.StoreKey, a: tuple[str, str], b: tuple[str, str]) -> None:
    """Linear CKA between every layer of model a (rows) and of model b (columns), the compared pair outlined."""
    rows = data.layer_cka(key, a[0], b[0])
    if not rows:
        st.info(f"No layers of {a[0]} and {b[0]} were shown the same images.")
        return
    ys = list(dict.fromkeys(r["layer"] for r in sorted(rows, key=lambda r: r["position"])))
    xs = list(dict.fromkeys(r["other_layer"] for r in sorted(rows, key=lambda r: r["other_position"])))
    value = {(r["layer"], r["other_layer"]): r["cka"] for r in rows}
    z = [[value.get((y, x)) for x in xs] for y in ys]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="CKA"),
                               text=[[f"{v:.2f}" if v is not None else "" for v in row] for row in z],
                               texttemplate="%{text}" if len(xs) * len(ys) <= 400 else None,
                               hovertemplate=f"{a[0]}@%{{y}} vs {b[0]}@%{{x}}: CKA %{{z:.3f}}<extra></extra>"))
    if a[1] in ys and b[1] in xs:
        i, j = ys.index(a[1]), xs.index(b[1])
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color="#ff8c00", width=3))
    fig.update_layout(height=min(900, 160 + 28 * len(ys)), margin=dict(l=10, r=10, t=10, b=10),
                      xaxis=dict(title=b[0], type="category"), yaxis=dict(title=a[0], type="category",
                                                                           autorange="reversed"))
    st.plotly_chart(fig, config={"displayModeBar": False})
