"""The path by which an image drives a unit: what each channel of the unit's layer input adds to the unit's
activation at one position (gradient times input, the first-order share of each input channel).

store.trust compares a unit's path on its feature visualisation with its path on its top dataset examples
(Geirhos et al. 2023): a picture whose activation comes from input channels that natural images do not use
drives the unit by another path. Only the channels the unit reads count, so a pattern the renderer leaves in
channels the unit ignores changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from precompute.hooks import CHANNELS_LAST, capture, channels_first, run
from precompute.layers import as_maps
from precompute.optvis.prepare import frozen_eval, match_layout

IMAGES = 16  # distinct images per forward to the layer, unless told: their layer inputs are held while read
PAIRS = 32  # pairs per backward: each holds a copy of its image's layer input and the module's graph on it


def _per_channel(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, C), summing all but the channel axis: axis 1 of conv maps, the last one of token
    sequences and of channels-last maps (the layout of the module's input is that of the model's stream)."""
    if t.ndim == 2:
        return t
    if t.ndim == 3 or (t.ndim == 4 and getattr(module, CHANNELS_LAST, False)):
        return t.flatten(1, -2).sum(dim=1)
    return t.flatten(2).sum(dim=2)


def _shares(module: nn.Module, inputs: torch.Tensor, units: list[int], cells: list) -> torch.Tensor | None:
    """Gradient-times-input shares for one batch of pairs, row i: unit units[i] at cells[i] on inputs[i]."""
    part = inputs.detach().clone().requires_grad_(True)
    try:
        got = module(part.clone())  # a module that works in place (ReLU(inplace=True)) may not touch the leaf
    except (RuntimeError, TypeError, ValueError):  # a module that needs more than its first input
        return None
    got = got[0] if isinstance(got, (tuple, list)) else got
    if not isinstance(got, torch.Tensor):
        return None
    maps = as_maps(channels_first(module, got))
    chosen = maps[torch.arange(len(part)), torch.tensor(units)].flatten(1)
    index = [int(chosen[i].argmax()) if cell is None else cell[0] * maps.shape[-1] + cell[1]
             for i, cell in enumerate(cells)]
    (grad,) = torch.autograd.grad(chosen[torch.arange(len(part)), torch.tensor(index)].sum(), part)
    return _per_channel(module, (part * grad).detach()).float().cpu()


def contributions(model: nn.Module, load: Callable[[Hashable], torch.Tensor],
                  pairs: dict[str, Sequence[tuple[Hashable, int, tuple[int, int] | None]]],
                  batch: int = IMAGES, progress: bool = False) -> dict[str, np.ndarray | None]:
    """Per layer (`pairs` in model order), per pair (image, unit, cell): each input channel's
    gradient-times-input share of the unit's activation at the map cell ((y, x) of the layer's maps as
    `as_maps` shapes them; None: the unit's strongest cell on that image). `load(image)` gives the normalised
    input (3, S, S). Every image is run once, to the deepest layer that has a pair on it, `batch` distinct
    images a forward, so the cost is at most one pass over the images, however many layers and units read
    them.

    {layer: (pairs, C_in) float32 in the pairs' order}, or None for a layer whose input is not one tensor or
    whose module cannot be run on it alone (the signal is then not available)."""
    modules = dict(model.named_modules())
    needs: dict[Hashable, list[tuple[str, int]]] = {}  # image -> (layer, pair index) reading it
    for layer, wanted in pairs.items():
        for i, (image, _, _) in enumerate(wanted):
            needs.setdefault(image, []).append((layer, i))
    shares: dict[str, dict[int, torch.Tensor] | None] = {layer: {} for layer in pairs}
    # Images that only shallow layers read share forwards, which stop early.
    depth = {layer: d for d, layer in enumerate(pairs)}
    images = sorted(needs, key=lambda image: max(depth[name] for name, _ in needs[image]))
    bar = tqdm(total=len(images), desc=f"paths of top examples ({len(pairs)} layers)", unit="img",
               disable=not progress)
    with frozen_eval(model), torch.enable_grad():
        for start in range(0, len(images), batch):
            bar.update(min(batch, len(images) - start))
            these = images[start:start + batch]
            row_of = {image: row for row, image in enumerate(these)}
            read_here = {name for image in these for name, _ in needs[image]}
            layers = [layer for layer in pairs if layer in read_here and shares[layer] is not None]
            if not layers:
                continue
            with torch.no_grad(), capture(model, layers, inputs=True) as seen:
                inputs = run(model, match_layout(torch.stack([load(image) for image in these]), model), seen)
            for layer in layers:
                mine = [i for image in these for name, i in needs[image] if name == layer]
                for first in range(0, len(mine), PAIRS):
                    chunk = [pairs[layer][i] for i in mine[first:first + PAIRS]]
                    got = None if inputs.get(layer) is None else _shares(
                        modules[layer], inputs[layer][[row_of[image] for image, _, _ in chunk]],
                        [unit for _, unit, _ in chunk], [cell for _, _, cell in chunk])
                    if got is None:
                        shares[layer] = None
                        break
                    shares[layer].update(zip(mine[first:first + PAIRS], got))
    bar.close()
    out: dict[str, np.ndarray | None] = {}
    for layer, wanted in pairs.items():
        got = shares[layer]
        out[layer] = None if got is None else np.stack([got[i].numpy() for i in range(len(wanted))]) if wanted \
            else np.zeros((0, 0), np.float32)
    return out
