"""The `stats` technique: per unit, the distribution over images of the unit's spatial-max activation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from precompute.dataset_pass import LayerRecord
from precompute.techniques.base import PassTechnique

HISTOGRAM_BINS = 40


class Stats(PassTechnique):
    name = "stats"
    VERSION = 1
    tables = ("unit_stats",)
    unit_key = "stats"

    def from_pass(self, ctx, job, record: LayerRecord) -> dict[str, pa.Table]:
        return {"unit_stats": rows(record, ctx.spec.id, job.layer, job.unit_start, job.unit_stop, job.key)}


def rows(record: LayerRecord, model_id: str, layer: str, start: int, stop: int, run_id: str) -> pa.Table:
    n = record.count
    mean = (record.total / n).cpu().numpy()
    var = (record.total_sq / n).cpu().numpy() - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    lo, hi = record.min.cpu().numpy(), record.max.cpu().numpy()
    positive = record.positive.cpu().numpy() / n
    values = record.reservoir()[0]  # all images while the dataset fits in the reservoir
    p50, p90, p99 = np.quantile(values, [0.5, 0.9, 0.99], axis=0)
    out = {k: [] for k in ("unit", "hist_counts")}
    for unit in range(start, stop):
        edges = np.linspace(lo[unit], hi[unit], HISTOGRAM_BINS + 1) if hi[unit] > lo[unit] else None
        counts = np.histogram(values[:, unit], bins=edges)[0] if edges is not None else np.array([len(values)])
        out["unit"].append(unit)
        out["hist_counts"].append(counts.astype(np.int64).tolist())
    sl = slice(start, stop)
    # A unit is dead when its response does not change with the image (for instance a ReLU stuck at zero).
    dead = std[sl] <= 1e-6 * (1.0 + np.abs(mean[sl]))
    return pa.table({
        "model_id": [model_id] * (stop - start),
        "layer": [layer] * (stop - start),
        "unit": out["unit"],
        "run_id": [run_id] * (stop - start),
        "images": [n] * (stop - start),
        "mean": mean[sl], "std": std[sl], "min": lo[sl], "max": hi[sl],
        "p50": p50[sl].astype(np.float64), "p90": p90[sl].astype(np.float64), "p99": p99[sl].astype(np.float64),
        "frac_positive": positive[sl], "dead": dead,
        "hist_lo": lo[sl], "hist_hi": hi[sl],
        "hist_counts": pa.array(out["hist_counts"], type=pa.list_(pa.int64())),
    })


TECHNIQUE = Stats()
