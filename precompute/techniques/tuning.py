"""The `tuning` technique: every unit's response to every synthetic stimulus (`store.stimuli`), as a
grid per family, with a summary per axis: preferred value, half-max width and a selectivity index.

The stimuli go through the model once per request for all requested layers (batched, the forward pass cut
after the deepest one); each job then summarises its units from that shared record. A unit's response to a
stimulus is read twice: at the centre of its map (where a stimulus centred in the image sits in its
receptive field) and as the map's spatial maximum over positions whose receptive field lies inside the image
(position-invariant). Summaries use the spatial maximum.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import torch

from precompute.hooks import capture
from precompute.hooks import run as forward
from precompute.layers import as_maps
from precompute.techniques.base import Technique
from store.stimuli import FAMILIES, Axis, Family, uniform_grey

BATCH = 32
# A uniform mid-grey field: each unit's response to "no stimulus", the baseline of its tuning curves.
BLANK = Family("blank", "Blank", 1, lambda size: (), lambda size: uniform_grey(size))


def responses(model, layers: list[str], size: int, mean, std, device, batch_size: int = BATCH,
              families: dict | None = None, margins: dict[str, int] | None = None
              ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{layer: {family: (spatial max, centre)}}, each (stimuli, units) float32, stimuli in grid order.
    `margins`: map cells left out of the spatial max at each side of a layer's map (see `margin`)."""
    families = FAMILIES if families is None else families
    out: dict[str, dict[str, list]] = {layer: {name: [] for name in families} for layer in layers}
    with capture(model, layers) as outputs, torch.inference_mode():
        for name, family in families.items():
            for x in batches(family, size, mean, std, batch_size):
                for layer, pair in record(model, x.to(device), outputs, margins).items():
                    out[layer][name].append(pair)
        grey = next(batches(BLANK, size, mean, std, 1)).to(device)
        for layer, pair in record(model, grey, outputs, margins).items():
            out[layer][BLANK.name] = [pair]
    return {layer: {name: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
                    for name, parts in by_family.items()} for layer, by_family in out.items()}


def batches(family, size: int, mean, std, batch_size: int):
    """A family's stimuli as normalised model inputs, in grid order."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    total = int(np.prod(family.shape(size)))
    for start in range(0, total, batch_size):
        images = torch.from_numpy(family.render(size, start, start + batch_size)).permute(0, 3, 1, 2)
        # NHWC in memory (channels_last): about 1.5x faster through depthwise convolutions on CPU.
        yield ((images - m) / s).contiguous(memory_format=torch.channels_last)


def record(model, x: torch.Tensor, outputs: dict, margins: dict[str, int] | None = None
           ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One batch inside `capture`: per layer, each unit's spatial-max and centre response (batch, units)."""
    result = {}
    for layer, t in forward(model, x, outputs).items():
        maps = as_maps(t).float()
        h, w = maps.shape[-2:]
        m = min((margins or {}).get(layer, 0), (h - 1) // 2, (w - 1) // 2)
        inner = maps[:, :, m: h - m, m: w - m]
        # clone: a NumPy view of the centre column would keep the batch's whole map alive (on a CPU `.cpu()`
        # copies nothing), and the pass keeps every batch's record: resnet18's grew by 40 MB a batch.
        result[layer] = (inner.amax(dim=(2, 3)).cpu().numpy(), maps[:, :, h // 2, w // 2].clone().cpu().numpy())
    return result


def margin(geometry, size: int) -> int:
    """Cells whose receptive field reaches past the image's edge. The stimulus ends there (zero padding,
    mid-grey after normalisation), and that border is an edge at every orientation: left in, it lifts the
    spatial max of every oriented unit to every stimulus and flattens its tuning curves."""
    stride = size / max(geometry.width, 1)
    return int(np.ceil(geometry.rf_px / 2 / stride))


# ---- summaries ---------------------------------------------------------------------------------------------


def marginal(grid: np.ndarray, axis: int) -> np.ndarray:
    """(units, *shape) -> (units, n): the tuning curve along one axis, through each unit's peak: the other
    axes held at the values of its best stimulus (orientation tuning at the preferred spatial frequency, as
    physiologists measure it; a max over the other axes would let e.g. coarse gratings, whose ends at the
    image border excite many units at every orientation, flatten the curve)."""
    units = grid.shape[0]
    peak = np.unravel_index(grid.reshape(units, -1).argmax(axis=1), grid.shape[1:])
    index = [np.arange(units)[:, None]]
    for d in range(grid.ndim - 1):
        index.append(np.arange(grid.shape[d + 1])[None, :] if d == axis else peak[d][:, None])
    return grid[tuple(index)]


def selectivity(curves: np.ndarray, values, period: float, baseline: np.ndarray | None = None) -> np.ndarray:
    """One minus circular variance (Ringach et al. 2002) of the curves above each unit's baseline (its
    response to a blank grey field; a firing rate above spontaneous), rectified; angles scaled to the axis's
    period: orientation (period 180°) uses doubled angles, so 0° and 180° count as the same orientation."""
    r = np.clip(curves - (0 if baseline is None else baseline[:, None]), 0, None)
    angles = np.deg2rad(np.asarray(values, dtype=np.float64) * 360.0 / period)
    total = r.sum(axis=1)
    vector = np.abs((r * np.exp(1j * angles)).sum(axis=1))
    return np.where(total > 0, vector / np.where(total > 0, total, 1), 0.0)


def half_max_width(curve: np.ndarray, values, period: float | None) -> float | None:
    """Full width at half maximum (above the curve's minimum) of the peak holding the maximum, in the axis's
    units, with linear interpolation at the crossings. A flat curve has none (None); on a non-circular axis a
    peak that runs off the grid is measured to the grid's end."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = float(curve.min()), float(curve.max())
    if not hi > lo:
        return None
    half = (lo + hi) / 2
    n = len(curve)
    peak = int(np.argmax(curve))
    if period is not None and np.all(curve >= half):
        return float(period)
    step = period / n if period is not None else None

    def reach(direction: int) -> float:
        i = peak
        while True:
            j = i + direction
            if period is None and not 0 <= j < n:
                return values[i]
            if period is not None and abs(j - peak) >= n:  # went all the way round
                return values[peak] + direction * period / 2
            a, b = curve[i % n], curve[j % n]
            if b < half:
                frac = (a - half) / (a - b)
                if period is not None:
                    return values[peak] + (i - peak + direction * frac) * step
                return values[i] + frac * (values[j] - values[i])
            i = j

    return float(abs(reach(1) - reach(-1)))


def summarise(axes: tuple[Axis, ...], grid: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(units, *shape) -> per unit: preferred value, width and selectivity of each axis ((units, axes) each;
    selectivity only for circular axes, NaN elsewhere), and the best response."""
    units = grid.shape[0]
    preferred = np.empty((units, len(axes)))
    width = np.full((units, len(axes)), np.nan)
    select = np.full((units, len(axes)), np.nan)
    for a, axis in enumerate(axes):
        curves = marginal(grid, a)
        preferred[:, a] = np.asarray(axis.values)[np.argmax(curves, axis=1)]
        for u in range(units):
            w = half_max_width(curves[u], axis.values, axis.period)
            width[u, a] = np.nan if w is None else w
        if axis.period is not None:
            select[:, a] = selectivity(curves, axis.values, axis.period, baseline)
    return {"preferred": preferred, "width": width, "selectivity": select,
            "best": grid.reshape(units, -1).max(axis=1)}


def _lists(matrix: np.ndarray, dtype) -> pa.Array:
    """Rows of a 2-D array as a list column; NaN becomes null."""
    flat = pa.array(matrix.reshape(-1), type=dtype, from_pandas=True)
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


def rows(model_id: str, layer: str, unit_start: int, unit_stop: int, run_id: str, size: int,
         record: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """The `tuning` table's rows for units [unit_start, unit_stop) of one layer."""
    parts = []
    units = np.arange(unit_start, unit_stop)
    n = len(units)
    for name, family in FAMILIES.items():
        axes = family.axes(size)
        shape = family.shape(size)
        peak, centre = (r[:, unit_start:unit_stop].T for r in record[name])  # (units, stimuli)
        blank = record[BLANK.name][0][0, unit_start:unit_stop]
        summary = summarise(axes, peak.reshape(n, *shape), blank)
        parts.append(pa.table({
            "model_id": [model_id] * n, "layer": [layer] * n, "unit": pa.array(units, pa.int32()),
            "family": [name] * n,
            "axes": [json.dumps([a.to_json() for a in axes])] * n,
            "shape": [list(shape)] * n,
            "response": _lists(peak, pa.float32()), "response_centre": _lists(centre, pa.float32()),
            "best": pa.array(summary["best"], pa.float64()),
            "best_centre": pa.array(centre.max(axis=1), pa.float64()),
            "blank": pa.array(blank, pa.float64()),
            "preferred": _lists(summary["preferred"], pa.float64()),
            "width": _lists(summary["width"], pa.float64()),
            "selectivity": _lists(summary["selectivity"], pa.float64()),
            "run_id": [run_id] * n,
        }))
    return pa.concat_tables(parts)


class Tuning(Technique):
    name = "tuning"
    VERSION = 3  # 2: spatial max inside the image; 3: selectivity above the blank response
    tables = ("tuning",)
    unit_key = "tuning"

    def params(self, req, spec) -> dict:
        return {"families": {name: f.version for name, f in FAMILIES.items()}}

    def run(self, ctx, job) -> dict[str, pa.Table]:
        """One job: the layer's units [unit_start, unit_stop). The stimulus pass runs once per request, for
        every layer the request names, and is kept in the context's cache for the other jobs. Where that pass
        raises (an error inside the model), each layer's pass runs alone: a layer that fails costs its own jobs."""
        key = ("tuning", job.params)
        size = ctx.spec.input_size

        def stimulus_pass(layers: list[str]) -> dict:
            return responses(ctx.model, layers, size, ctx.spec.mean, ctx.spec.std, ctx.device,
                             batch_size=ctx.request.batch_size,
                             margins={name: margin(ctx.geometry[name], size) for name in layers})

        if key not in ctx.cache:
            try:
                ctx.cache[key] = stimulus_pass(ctx.layers)
            except Exception:  # noqa: BLE001 - any error raised inside the model: retried layer by layer below
                ctx.cache[key] = {}
        if job.layer not in ctx.cache[key]:
            ctx.cache[key].update(stimulus_pass([job.layer]))
        return {"tuning": rows(ctx.spec.id, job.layer, job.unit_start, job.unit_stop, job.key, ctx.spec.input_size,
                               ctx.cache[key][job.layer])}


TECHNIQUE = Tuning()
