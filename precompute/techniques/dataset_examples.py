"""The `dataset` technique: per unit, the images that excite it most and least, and a sample across quantiles.

Each example keeps its image (stored once per dataset), the argmax position, the crop around it sized to
the layer's effective receptive field, and the activation map under that crop (for the heatmap overlay).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from precompute.dataset_pass import LayerRecord

VERSION = 1
# Circuits-style sample of the response distribution, from the top of the range down.
QUANTILES = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
THUMB_PX = 96


def rows(record: LayerRecord, model_id: str, layer: str, start: int, stop: int, run_id: str,
         image_id) -> pa.Table:
    """`image_id(index)` names a dataset image in the store."""
    win = record.window
    cols: dict[str, list] = {c: [] for c in ("unit", "kind", "rank", "quantile", "image_id", "activation",
                                             "pos_y", "pos_x", "box", "heat")}

    def add(unit, kind, rank, quantile, index, activation, pos, heat):
        cols["unit"].append(unit)
        cols["kind"].append(kind)
        cols["rank"].append(rank)
        cols["quantile"].append(quantile)
        cols["image_id"].append(image_id(int(index)))
        cols["activation"].append(float(activation))
        cols["pos_y"].append(int(pos) // win.width)
        cols["pos_x"].append(int(pos) % win.width)
        cols["box"].append(list(win.box(int(pos))))
        cols["heat"].append(heat.tobytes() if heat is not None else None)

    for kind, ext in (("top", record.top), ("bottom", record.bottom)):
        value, index, pos, heat = (t.cpu().numpy() for t in ext.ranked())
        for unit in range(start, stop):
            for rank in range(value.shape[0]):
                if index[rank, unit] >= 0:
                    add(unit, kind, rank, None, index[rank, unit], value[rank, unit], pos[rank, unit],
                        heat[rank, unit].astype(np.float16))

    values, positions, indices = record.reservoir()
    for unit in range(start, stop):
        order = np.argsort(values[:, unit], kind="stable")
        for rank, q in enumerate(QUANTILES):
            row = order[min(len(order) - 1, int(round(q * (len(order) - 1))))]
            add(unit, "quantile", rank, q, indices[row], values[row, unit], positions[row, unit], None)

    n = len(cols["unit"])
    return pa.table({
        "model_id": [model_id] * n, "layer": [layer] * n, **{k: v for k, v in cols.items() if k != "heat"},
        "heat_cells": [win.cells if h is not None else 0 for h in cols["heat"]],
        "heat": pa.array(cols["heat"], type=pa.binary()), "run_id": [run_id] * n,
    })


def referenced_images(table: pa.Table) -> set[str]:
    return set(table.column("image_id").to_pylist())
