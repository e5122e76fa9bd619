"""The `similar` technique: each unit's response to a fixed sample of dataset images, from which the store finds
the units that respond alike, in the same layer, in other layers and in other models.

A unit's response to an image is its spatial-max activation, the number the `stats` and `dataset` techniques
rank images by. The sample is at most SAMPLE_IMAGES images of the pass's reservoir (all of them while the
dataset fits), spread evenly over the dataset's order and named by their dataset index. Models run on the same
dataset therefore share their images whatever their input size, and the neighbours are found where all of a
store's models meet: when `microscope ingest` builds the store (store/similarity.py), not here. A model
precomputed later, into the same work folder, gets neighbours in every model already there, and they in it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from precompute.dataset_pass import LayerRecord
from precompute.techniques.base import PassTechnique

# Enough images for a correlation to separate units (its standard error is about 1/sqrt(n)), few enough that
# a unit's responses take 4 KB of the store (float16).
SAMPLE_IMAGES = 2048


def sample(indices: np.ndarray, size: int = SAMPLE_IMAGES) -> np.ndarray:
    """Positions (into `indices`) of at most `size` images, in dataset order and spread evenly over it."""
    order = np.argsort(indices, kind="stable")
    if len(order) <= size:
        return order
    return order[np.linspace(0, len(order) - 1, size).round().astype(np.int64)]


class Similar(PassTechnique):
    name = "similar"
    VERSION = 1
    tables = ("unit_responses", "response_images")
    unit_key = "similar"

    def params(self, req, spec) -> dict:
        return {"sample_images": SAMPLE_IMAGES}

    def from_pass(self, ctx, job, record: LayerRecord) -> dict[str, pa.Table]:
        values, _, indices = record.reservoir()
        chosen = sample(indices)
        units = range(job.unit_start, job.unit_stop)
        responses = values[chosen][:, job.unit_start:job.unit_stop].astype("<f2")
        n = len(units)
        return {
            "unit_responses": pa.table({
                "model_id": [ctx.spec.id] * n, "layer": [job.layer] * n, "unit": pa.array(units, type=pa.int32()),
                "run_id": [job.key] * n,
                "responses": pa.array([responses[:, i].tobytes() for i in range(n)], type=pa.binary()),
            }),
            "response_images": pa.table({
                "model_id": [ctx.spec.id], "layer": [job.layer], "unit": pa.array([job.unit_start], type=pa.int32()),
                "run_id": [job.key],
                "dataset": [ctx.request.dataset],
                "images": pa.array([indices[chosen].astype(np.int64).tolist()], type=pa.list_(pa.int64())),
            }),
        }


TECHNIQUE = Similar()
