"""The `circuits` technique: the weights between units of neighbouring layers, as in "Visualizing Weights"
(Voss et al., Distill 2021), read through linearised paths (`precompute.linear_paths`).

Each kernel is summarised by its signed sum (the target's response to a uniform unit input: the `weight`)
and its L2 norm. Per unit the technique keeps the top-k positive and top-k negative input neighbours in each
of the HOPS layers before it, and likewise output neighbours in the next layer, each with its kernel; and
the whole weight matrix (signed sums) between the layer and each source, for the layer page. A pair whose
path is not linear is recorded with its reason (`circuit_paths`) instead of weights.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa

from precompute.feature_layers import base_of, is_feature_layer
from precompute.linear_paths import MAX_KERNEL, CircuitError, NotLinearPath, PairWeights, expanded_weights, strongest
from precompute.techniques.base import Technique
from store.errors import one_line

HOPS = 2  # input neighbours in each of this many layers back (1: the adjacent layer; 2: also expanded weights)
MIN_K = 16  # neighbours kept per sign at least (the request's k, if larger)
CACHED_PAIRS = 3  # a layer's job reuses the pair its predecessor computed as outputs (jobs run in layer order)


class Circuits(Technique):
    name = "circuits"
    VERSION = 1
    tables = ("circuits", "circuit_matrix", "circuit_paths")
    unit_key = "circuits"

    def params(self, req, spec) -> dict:
        return {"hops": HOPS, "k": max(MIN_K, req.k), "max_kernel": MAX_KERNEL}

    def run(self, ctx, job) -> dict[str, pa.Table]:
        return neighbour_tables(ctx, job)


def _pair(ctx, source: str, target: str) -> PairWeights | CircuitError:
    """All units' weights between two layers, shared by the jobs of one request (a layer's inputs from the
    previous layer are that layer's outputs); an error is kept as the result."""
    cache = ctx.cache.setdefault("circuits", OrderedDict())
    if (source, target) not in cache:
        try:
            cache[(source, target)] = expanded_weights(ctx.model, source, target, ctx.spec.input_size, ctx.device)
        except CircuitError as exc:
            cache[(source, target)] = exc
        except Exception as exc:  # noqa: BLE001 - an exotic model's pair fails alone, with its reason stored
            cache[(source, target)] = CircuitError(f"cannot compute weights from {source} to {target}: "
                                                   f"{one_line(exc)}")
        while len(cache) > CACHED_PAIRS:
            cache.popitem(last=False)
    cache.move_to_end((source, target))
    return cache[(source, target)]


def _feature_pair(ctx, source: str, target: str) -> PairWeights | CircuitError:
    """A dictionary layer's weights: from its base layer, the encoder's rows (1x1 kernels: the TopK set aside
    as the expanded weights set ReLUs aside); from a layer further back, the base layer's expanded weights
    followed by the encoder."""
    base = base_of(target)
    encoder = dict(ctx.model.named_modules())[target].encoder.detach().cpu().numpy().astype(np.float64)
    if source == base:
        g = ctx.geometry[base]
        centre = (g.height // 2, g.width // 2)
        return PairWeights(source, target, np.arange(len(encoder)), encoder, np.abs(encoder),
                           encoder[:, :, None, None].astype(np.float32), (*centre, 1, 1), (1, 1), (g.height, g.width),
                           centre)
    inner = _pair(ctx, source, base)
    if isinstance(inner, CircuitError):
        return inner
    kernels = np.einsum("fc,cphw->fphw", encoder, inner.kernels.astype(np.float64)).astype(np.float32)
    rows = encoder[:, inner.units]
    return PairWeights(source, target, np.arange(len(encoder)), rows @ inner.weights,
                       np.sqrt(np.einsum("fphw->fp", kernels.astype(np.float64) ** 2)), kernels, inner.window,
                       inner.support, inner.source_map, inner.centre, inner.crop)


def neighbour_tables(ctx, job) -> dict[str, pa.Table]:
    """The job's units' strongest input and output neighbours, their rows of the weight matrix, and how each
    path to them went. A dictionary layer (`BASE/NAME`) reads its base layer and the layers before it, and
    feeds nothing: the network's own layers are each other's neighbours, as if it were not there."""
    names = [layer.name for layer in ctx.spec.layers if not is_feature_layer(layer.name) or layer.name == job.layer]
    at = names.index(job.layer)
    feature = is_feature_layer(job.layer)
    k = max(MIN_K, ctx.request.k)
    units = list(range(job.unit_start, job.unit_stop))
    rows: dict[str, list] = {c: [] for c in ("unit", "direction", "other_layer", "hops", "other_unit", "rank",
                                             "weight", "norm", "kernel_h", "kernel_w", "kernel")}
    matrix: dict[str, list] = {c: [] for c in ("unit", "source", "hops", "weights")}
    paths: dict[str, list] = {c: [] for c in ("source", "hops", "status", "message", "kernel_h", "kernel_w",
                                              "support_h", "support_w")}

    def add(unit, direction, other_layer, hops, pair, row, column, rank):
        rows["unit"].append(unit)
        rows["direction"].append(direction)
        rows["other_layer"].append(other_layer)
        rows["hops"].append(hops)
        rows["other_unit"].append(int(pair.units[row]) if direction == "output" else int(column))
        rows["rank"].append(rank)
        rows["weight"].append(float(pair.weights[row, column]))
        rows["norm"].append(float(pair.norms[row, column]))
        rows["kernel_h"].append(pair.window[2])
        rows["kernel_w"].append(pair.window[3])
        rows["kernel"].append(np.ascontiguousarray(pair.kernels[row, column], dtype="<f4").tobytes())

    for hops in range(1, HOPS + 1):
        if at - hops < 0:
            break
        source = names[at - hops]
        pair = _feature_pair(ctx, source, job.layer) if feature else _pair(ctx, source, job.layer)
        if isinstance(pair, CircuitError):
            status = "not_linear" if isinstance(pair, NotLinearPath) else "error"
            for key, value in zip(paths, (source, hops, status, str(pair), None, None, None, None)):
                paths[key].append(value)
            continue
        for key, value in zip(paths, (source, hops, "ok", "", pair.window[2], pair.window[3], *pair.support)):
            paths[key].append(value)
        for unit in units:
            row = int(np.searchsorted(pair.units, unit))
            for chosen in strongest(pair.weights[row], k):
                for rank, column in enumerate(chosen):
                    add(unit, "input", source, hops, pair, row, column, rank)
            for key, value in zip(matrix, (unit, source, hops, pair.weights[row].astype(np.float32).tolist())):
                matrix[key].append(value)
    if at + 1 < len(names) and not feature:
        pair = _pair(ctx, job.layer, names[at + 1])
        if not isinstance(pair, CircuitError):
            for unit in units:
                for chosen in strongest(pair.weights[:, unit], k):
                    for rank, row in enumerate(chosen):
                        add(unit, "output", names[at + 1], 1, pair, row, unit, rank)

    def table(columns: dict, types: dict | None = None) -> pa.Table:
        n = len(next(iter(columns.values())))
        data = {"model_id": [ctx.spec.id] * n, "layer": [job.layer] * n}
        for key, values in columns.items():
            data[key] = pa.array(values, type=(types or {}).get(key))
        data["run_id"] = [job.key] * n
        return pa.table(data)

    return {
        "circuits": table(rows, {"kernel": pa.binary(), "unit": pa.int32(), "other_unit": pa.int32(),
                                 "hops": pa.int32(), "rank": pa.int32(), "kernel_h": pa.int32(),
                                 "kernel_w": pa.int32()}),
        "circuit_matrix": table(matrix, {"weights": pa.list_(pa.float32()), "unit": pa.int32(), "hops": pa.int32()}),
        "circuit_paths": table(paths, {"hops": pa.int32(), "message": pa.string(), "kernel_h": pa.int32(),
                                       "kernel_w": pa.int32(), "support_h": pa.int32(), "support_w": pa.int32()}),
    }


TECHNIQUE = Circuits()
