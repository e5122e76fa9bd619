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

from precompute.hooks import CHANNELS_LAST, StopForward, channels_first
from precompute.layers import as_maps
from precompute.optvis.prepare import frozen_eval, match_layout

IMAGES = 16  # distinct images per forward to the layer, unless told: their layer inputs are held while read
PAIRS = 32  # pairs per backward: each holds a copy of its image's layer input and the module's graph on it


def layer_inputs(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor | None:
    """The input of module `layer` on the normalised batch `x` (the forward stops there), or None where the
    module is not called with one tensor."""
    module = dict(model.named_modules())[layer]
    seen: list = []

    def grab(_module, args):
        seen.append(args[0] if len(args) == 1 and isinstance(args[0], torch.Tensor) else None)
        raise StopForward

    handle = module.register_forward_pre_hook(grab)
    try:
        with torch.no_grad(), frozen_eval(model):
            try:
                model(match_layout(x, model))
            except StopForward:
                pass
    finally:
        handle.remove()
    return seen[0] if seen else None


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
        got = module(part)
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


def contributions(model: nn.Module, layer: str, load: Callable[[Hashable], torch.Tensor],
                  pairs: Sequence[tuple[Hashable, int, tuple[int, int] | None]],
                  batch: int = IMAGES) -> np.ndarray | None:
    """Per pair (image, unit, cell): each input channel's gradient-times-input share of the unit's activation
    at the map cell ((y, x) of the layer's maps as `as_maps` shapes them; None: the unit's strongest cell on
    that image). `load(image)` gives the normalised input (3, S, S); each image is run to the layer once,
    `batch` distinct images a forward. (pairs, C_in) float32 in the pairs' order; None where the layer's input
    is not one tensor or the module cannot be run on it alone (the signal is then not available)."""
    module = dict(model.named_modules())[layer]
    by_image: dict[Hashable, list[int]] = {}
    for i, (image, _, _) in enumerate(pairs):
        by_image.setdefault(image, []).append(i)
    images = list(by_image)
    out: dict[int, torch.Tensor] = {}
    with frozen_eval(model), torch.enable_grad():
        for start in range(0, len(images), batch):
            these = images[start:start + batch]
            inputs = layer_inputs(model, layer, torch.stack([load(image) for image in these]))
            if inputs is None:
                return None
            row_of = {image: row for row, image in enumerate(these)}
            mine = [i for image in these for i in by_image[image]]
            for first in range(0, len(mine), PAIRS):
                chunk = mine[first:first + PAIRS]
                got = _shares(module, inputs[[row_of[pairs[i][0]] for i in chunk]],
                              [pairs[i][1] for i in chunk], [pairs[i][2] for i in chunk])
                if got is None:
                    return None
                out.update(zip(chunk, got))
    return torch.stack([out[i] for i in range(len(pairs))]).numpy() if pairs else np.zeros((0, 0), np.float32)
