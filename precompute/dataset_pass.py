"""One streaming pass over a dataset that records, for every unit of every requested layer at once, what
the `stats` and `dataset` techniques need: running moments, a bounded reservoir of per-image responses,
and the top-k / bottom-k images with their argmax position and the activation map around it; and, where a
technique asks for them (`classes`), the class the model predicts for each kept image.

Memory is bounded by the layer sizes, k and the reservoir size, never by the dataset's length.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from precompute.datasets import Dataset
from precompute.hooks import capture, run
from precompute.layers import Geometry, as_maps
from precompute.models import ModelSpec

MIN_CROP_PX = 32  # dataset crops narrower than this are unreadable as thumbnails
# The pass keeps this many times k top and bottom candidates per unit: the dataset technique drops candidates
# that repeat a place of a source image already kept (precompute.places), which only it can tell, as the
# pass sees items, not their sources, and still fills k examples from the rest.
CANDIDATES = 4


@dataclass(frozen=True)
class Window:
    """Where a unit's example crop sits: a window of activation cells and the input pixels under it."""

    height: int  # activation map
    width: int
    cells: int  # window side in cells
    input_size: int

    @classmethod
    def for_layer(cls, geo: Geometry, input_size: int) -> Window:
        stride = input_size / geo.width
        cells = math.ceil(max(geo.rf_px, MIN_CROP_PX) / stride)
        return cls(geo.height, geo.width, max(1, min(cells, geo.height, geo.width)), input_size)

    def origin(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left cell of the window centred on each flat argmax position, shifted to lie inside the map."""
        py, px = pos // self.width, pos % self.width
        y0 = (py - self.cells // 2).clamp(0, self.height - self.cells)
        x0 = (px - self.cells // 2).clamp(0, self.width - self.cells)
        return y0, x0

    def cut(self, flat: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The window of each map around its argmax: flat (n, height*width), pos (n,) -> (n, cells, cells)."""
        y0, x0 = self.origin(pos)
        steps = torch.arange(self.cells, device=flat.device)
        idx = (y0[:, None, None] + steps[:, None]) * self.width + x0[:, None, None] + steps[None, :]
        return flat.gather(1, idx.flatten(1)).view(-1, self.cells, self.cells)

    def box(self, pos: int) -> tuple[int, int, int, int]:
        """The crop (left, top, right, bottom) in input pixels for one flat argmax position."""
        py, px = divmod(int(pos), self.width)
        y0 = min(max(py - self.cells // 2, 0), self.height - self.cells)
        x0 = min(max(px - self.cells // 2, 0), self.width - self.cells)
        sy, sx = self.input_size / self.height, self.input_size / self.width
        return (round(x0 * sx), round(y0 * sy), round((x0 + self.cells) * sx), round((y0 + self.cells) * sy))


class Extremes:
    """The k images with the highest (sign=+1) or lowest (sign=-1) spatial-max activation, per unit, strongest
    first. The activation window (the heatmap) is cut out only for the (image, unit) pairs that enter the
    list, in one batched gather. Ties keep the earlier image (stable), so batch boundaries do not matter.
    """

    def __init__(self, k: int, units: int, cells: int, sign: float, device, predictions: bool = False):
        self.sign = sign
        self.value = torch.full((k, units), -math.inf, device=device)  # sign * activation
        self.index = torch.full((k, units), -1, dtype=torch.long, device=device)
        self.pos = torch.zeros((k, units), dtype=torch.long, device=device)
        self.heat = torch.zeros((k, units, cells, cells), dtype=torch.float16, device=device)
        # The model's top-1 class for each kept image (-1: none), carried like `index`; None when not asked for.
        self.pred = torch.full((k, units), -1, dtype=torch.long, device=device) if predictions else None

    def update(self, value: torch.Tensor, index: torch.Tensor, pos: torch.Tensor, flat: torch.Tensor,
               window: Window, pred: torch.Tensor | None = None) -> None:
        k, cells = self.value.shape[0], self.heat.shape[-1]
        values = torch.cat([self.value, self.sign * value])
        best = torch.sort(values, dim=0, descending=True, stable=True).indices[:k]  # (k, units)
        self.value = values.gather(0, best)
        self.index = torch.cat([self.index, index[:, None].expand_as(value)]).gather(0, best)
        self.pos = torch.cat([self.pos, pos]).gather(0, best)
        if self.pred is not None and pred is not None:
            self.pred = torch.cat([self.pred, pred[:, None].expand_as(value)]).gather(0, best)
        kept = best.clamp(max=k - 1)[:, :, None, None].expand(-1, -1, cells, cells)
        self.heat = self.heat.gather(0, kept)
        rank, unit = (best >= k).nonzero(as_tuple=True)
        if rank.numel():
            image = best[rank, unit] - k
            self.heat[rank, unit] = window.cut(flat[image, unit], pos[image, unit]).to(torch.float16)

    def ranked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(activation, image index, argmax position, heat), each (k, units), strongest first."""
        return self.sign * self.value, self.index, self.pos, self.heat


class LayerRecord:
    """Everything one layer's units accumulate over the pass."""

    def __init__(self, units: int, window: Window, k: int, reservoir: int, seed: int, device,
                 predictions: bool = False):
        self.window = window
        self.count = 0
        self.total = torch.zeros(units, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(units, dtype=torch.float64, device=device)
        self.min = torch.full((units,), math.inf, dtype=torch.float64, device=device)
        self.max = torch.full((units,), -math.inf, dtype=torch.float64, device=device)
        self.positive = torch.zeros(units, dtype=torch.long, device=device)
        self.top = Extremes(k, units, window.cells, +1.0, device, predictions)
        self.bottom = Extremes(k, units, window.cells, -1.0, device, predictions)
        self.classes: int | None = None  # the model's number of output classes, once predictions were seen
        # Reservoir sample (Vitter's algorithm R) of whole images: exact quantiles while the dataset fits.
        self.res_value = np.zeros((reservoir, units), dtype=np.float32)
        self.res_pos = np.zeros((reservoir, units), dtype=np.int32)
        self.res_index = np.zeros(reservoir, dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def update(self, maps: torch.Tensor, index: torch.Tensor, logits: torch.Tensor | None = None) -> None:
        """`logits`: the model's (batch, classes) output for the batch, where predictions were asked for."""
        maps = maps.float()
        b, c, h, w = maps.shape
        flat = maps.flatten(2)
        value, pos = flat.max(dim=2)  # (b, c)
        v64 = value.double()
        self.count += b
        self.total += v64.sum(0)
        self.total_sq += (v64 * v64).sum(0)
        self.min = torch.minimum(self.min, v64.min(0).values)
        self.max = torch.maximum(self.max, v64.max(0).values)
        self.positive += (value > 0).sum(0)
        pred = None
        if logits is not None:
            pred, self.classes = logits.argmax(dim=1), int(logits.shape[1])
        self.top.update(value, index, pos, flat, self.window, pred)
        self.bottom.update(value, index, pos, flat, self.window, pred)
        self._sample(value.cpu().numpy(), pos.cpu().numpy(), index.cpu().numpy())

    def _sample(self, value: np.ndarray, pos: np.ndarray, index: np.ndarray) -> None:
        size = self.res_value.shape[0]
        for row in range(len(index)):
            seen = self.count - len(index) + row  # images seen before this one
            slot = seen if seen < size else int(self.rng.integers(0, seen + 1))
            if slot < size:
                self.res_value[slot], self.res_pos[slot], self.res_index[slot] = value[row], pos[row], index[row]

    def reservoir(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = min(self.count, self.res_value.shape[0])
        return self.res_value[:n], self.res_pos[:n], self.res_index[:n]


def _batches(dataset: Dataset, size: int, mean, std, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Decodes and normalises batches on a background thread, so image work overlaps the forward pass."""
    out: queue.Queue = queue.Queue(maxsize=2)

    def produce():
        try:
            images, indices = [], []
            for index, image in dataset.stream(size):
                images.append(np.asarray(image, dtype=np.uint8))
                indices.append(index)
                if len(images) == batch_size:
                    out.put((images, indices))
                    images, indices = [], []
            if images:
                out.put((images, indices))
            out.put(None)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consuming thread, which re-raises it
            out.put(exc)

    threading.Thread(target=produce, daemon=True).start()
    while (item := out.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        images, indices = item
        yield normalise(images, mean, std), torch.tensor(indices)


def normalise(images: list, mean, std) -> torch.Tensor:
    """RGB images (PIL or uint8 arrays, already at the input size) to a normalised batch."""
    x = torch.from_numpy(np.stack([np.asarray(i, dtype=np.uint8) for i in images])).permute(0, 3, 1, 2)
    x = x.float().div_(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def dataset_pass(model, spec: ModelSpec, layers: list[str], geometry: dict[str, Geometry], dataset: Dataset,
                 device, k: int, reservoir: int, seed: int, batch_size: int = 32,
                 progress: bool = True, predictions: bool = False) -> dict[str, LayerRecord]:
    """With `predictions`, the pass runs the whole model (not only up to the deepest layer) and each kept
    image carries the model's top-1 class, where the model outputs (batch, classes) logits."""
    records = {
        name: LayerRecord(spec.layer(name).units, Window.for_layer(geometry[name], spec.input_size), k,
                          reservoir, seed, device, predictions)
        for name in layers
    }
    bar = tqdm(total=len(dataset), desc=f"dataset pass ({len(layers)} layers)", unit="img", disable=not progress)
    with capture(model, layers, stop_after_last=not predictions) as outputs, torch.inference_mode():
        for x, index in _batches(dataset, spec.input_size, spec.mean, spec.std, batch_size):
            logits = None
            if predictions:
                outputs.clear()
                out = model(x.to(device))
                acts = dict(outputs)
                if isinstance(out, torch.Tensor) and out.ndim == 2 and out.is_floating_point():
                    logits = out
            else:
                acts = run(model, x.to(device), outputs)
            index = index.to(device)
            for name, record in records.items():
                record.update(as_maps(acts[name]), index, logits)
            bar.update(len(index))
    bar.close()
    return records
