"""The `classes` technique: what a unit votes for. Per unit, the output classes whose logits it raises most
(`up`) and lowers most (`down`), and the classes the model predicts most often on the unit's top dataset
images (`predicted`).

A vote is the linearised change of a class's logit when the unit's whole map rises by 1, ReLUs taken as the
identity and batch norm folded (`precompute.linear_paths.uniform_responses`): exact for a layer right before
global average pooling and a linear head (the head's weights), the sum of the expanded weights through the
layers between otherwise. A layer whose path to the logits is not linear (gating, attention, layer norm) gets
its reason in `class_paths` and no votes. The predictions ride on the shared dataset pass, which then runs the
model to its output (`needs_predictions`); the votes are computed once per layer per request and cut per job.
Labels are ImageNet's where the model's spec says so (and the head has 1000 classes), NULL otherwise: the
class index is the name.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

import numpy as np
import pyarrow as pa

from precompute.dataset_pass import LayerRecord
from precompute.feature_layers import base_of, is_feature_layer
from precompute.linear_paths import (
    CircuitError,
    NoClassifier,
    NotLinearPath,
    classifier_output,
    strongest,
    uniform_responses,
)
from precompute.models import imagenet_labels
from precompute.places import distinct_ranks, placer
from precompute.techniques.base import PassTechnique
from store.errors import one_line

VOTES = 10  # classes kept per sign and unit, strongest first
PREDICTED = 5  # most frequent predicted classes kept per unit, over its top dataset images
CACHED_LAYERS = 2  # jobs run in layer order: a layer's votes serve its unit chunks, then make way


class Classes(PassTechnique):
    name = "classes"
    VERSION = 2  # 2: predicted classes of the top images the dataset technique keeps (distinct places)
    tables = ("unit_classes", "class_paths")
    unit_key = "classes"
    needs_predictions = True

    def params(self, req, spec) -> dict:
        return {"votes": VOTES, "predicted": PREDICTED, "labels": spec.labels}

    def from_pass(self, ctx, job, record: LayerRecord) -> dict[str, pa.Table]:
        return class_tables(ctx, job, record)


def _classifier(ctx) -> str | CircuitError:
    cache = ctx.cache.setdefault("classes", {"votes": OrderedDict()})
    if "classifier" not in cache:
        try:
            cache["classifier"] = classifier_output(ctx.model, ctx.spec.input_size, ctx.device)
        except CircuitError as exc:
            cache["classifier"] = exc
    return cache["classifier"]


def votes(ctx, layer: str) -> np.ndarray | CircuitError:
    """(classes, units) for one layer, shared by the layer's jobs; an error is kept as the result."""
    classifier = _classifier(ctx)
    if isinstance(classifier, CircuitError):
        return classifier
    cache = ctx.cache["classes"]["votes"]
    if layer not in cache and is_feature_layer(layer):
        cache[layer] = _feature_votes(ctx, layer)
    if layer not in cache:
        try:
            cache[layer] = uniform_responses(ctx.model, layer, classifier, ctx.spec.input_size, ctx.device)
        except CircuitError as exc:
            cache[layer] = exc
        except Exception as exc:  # noqa: BLE001 - an exotic model's layer fails alone, with its reason stored
            cache[layer] = CircuitError(f"cannot compute class votes of {layer}: {one_line(exc)}")
        while len(cache) > CACHED_LAYERS:
            cache.popitem(last=False)
    cache.move_to_end(layer)
    return cache[layer]


def _feature_votes(ctx, layer: str) -> np.ndarray | CircuitError:
    """A dictionary feature votes as its decoder direction does through its base layer: the logits' change
    when the base layer's map moves by the feature's unit direction. Where the base layer's path is not linear,
    neither is the feature's, with the same reason."""
    base = votes(ctx, base_of(layer))
    if isinstance(base, CircuitError):
        return type(base)(f"{base} (the votes of {layer} go through its base layer {base_of(layer)})")
    direction = dict(ctx.model.named_modules())[layer].direction.detach().cpu().numpy().astype(np.float64)
    return base @ direction.T


def labels(ctx, classes: int) -> list[str] | None:
    """The class names where the model has them (ImageNet's 1000), else None."""
    if ctx.spec.labels != "imagenet" or classes != 1000:
        return None
    cache = ctx.cache.setdefault("classes", {"votes": OrderedDict()})
    if "labels" not in cache:
        cache["labels"] = imagenet_labels()
    return cache["labels"]


def status_of(result) -> str:
    if isinstance(result, NotLinearPath):
        return "not_linear"
    if isinstance(result, NoClassifier):
        return "no_classifier"
    return "error" if isinstance(result, CircuitError) else "ok"


def class_tables(ctx, job, record: LayerRecord) -> dict[str, pa.Table]:
    """The job's units' up and down votes and predicted classes, and how the layer's path to the logits went."""
    result = votes(ctx, job.layer)
    classifier = _classifier(ctx)
    classes = result.shape[0] if isinstance(result, np.ndarray) else record.classes
    names = labels(ctx, classes) if classes else None
    rows: dict[str, list] = {c: [] for c in ("unit", "kind", "rank", "class_index", "label", "weight", "z",
                                             "count")}

    def add(unit, kind, rank, index, weight=None, z=None, count=None):
        for key, value in zip(rows, (unit, kind, rank, int(index), names[index] if names else None, weight, z,
                                     count)):
            rows[key].append(value)

    units = range(job.unit_start, job.unit_stop)
    if isinstance(result, np.ndarray):
        for unit in units:
            column = result[:, unit]
            # The votes' scale grows with the linearised path's gains (large in early layers): the z-score
            # over the classes is what compares across layers and models.
            spread = column.std()
            for kind, chosen in zip(("up", "down"), strongest(column, VOTES)):
                for rank, index in enumerate(chosen):
                    z = float((column[index] - column.mean()) / spread) if spread > 0 else 0.0
                    add(unit, kind, rank, index, weight=float(column[index]), z=z)
    pred = record.top.pred
    if pred is not None and record.classes:
        top = pred.cpu().numpy()
        # The top images the dataset technique keeps: the pass's candidates less repeats of one place.
        images, positions = (t.cpu().numpy() for t in (record.top.index, record.top.pos))
        place = placer(record.window, lambda i: ctx.dataset.frame(i, ctx.spec.input_size))
        for unit in units:
            ranks = distinct_ranks(images[:, unit], positions[:, unit], ctx.request.k, place)
            seen = Counter(int(top[rank, unit]) for rank in ranks if top[rank, unit] >= 0)
            for rank, (index, count) in enumerate(sorted(seen.items(), key=lambda item: (-item[1], item[0]))
                                                  [:PREDICTED]):
                add(unit, "predicted", rank, index, count=count)
    message = "" if isinstance(result, np.ndarray) else str(result)
    n = len(rows["unit"])
    unit_classes = pa.table({
        "model_id": [ctx.spec.id] * n, "layer": [job.layer] * n,
        "unit": pa.array(rows["unit"], pa.int32()), "kind": pa.array(rows["kind"], pa.string()),
        "rank": pa.array(rows["rank"], pa.int32()), "class_index": pa.array(rows["class_index"], pa.int32()),
        "label": pa.array(rows["label"], pa.string()), "weight": pa.array(rows["weight"], pa.float64()),
        "z": pa.array(rows["z"], pa.float64()), "count": pa.array(rows["count"], pa.int32()),
        "run_id": [job.key] * n,
    })
    class_paths = pa.table({
        "model_id": [ctx.spec.id], "layer": [job.layer], "status": [status_of(result)],
        "message": pa.array([message], pa.string()),
        "classifier": pa.array([None if isinstance(classifier, CircuitError) else classifier], pa.string()),
        "classes": pa.array([classes], pa.int32()), "labeled": [names is not None],
        "top_images": pa.array([min(ctx.request.k, int(record.top.value.shape[0]))], pa.int32()), "run_id": [job.key],
    })
    return {"unit_classes": unit_classes, "class_paths": class_paths}


TECHNIQUE = Classes()
