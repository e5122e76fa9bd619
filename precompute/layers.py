"""Layer geometry: discovering the layers of a model no one described, and the receptive field of each."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from precompute.hooks import capture, run
from precompute.models import Layer, ModelError, ModelSpec


def as_maps(t: torch.Tensor) -> torch.Tensor:
    """A layer output as (batch, units, height, width).

    Convolutions are already 4-D. Token sequences (batch, tokens, dim) become a square grid of patches,
    with leading class/register tokens dropped when the rest forms a square; vectors become 1x1 maps.
    """
    if t.ndim == 4:
        return t
    if t.ndim == 3:
        b, n, c = t.shape
        for prefix in range(0, min(n, 9)):
            side = math.isqrt(n - prefix)
            if side * side == n - prefix and side > 0:
                return t[:, prefix:].transpose(1, 2).reshape(b, c, side, side)
        return t.transpose(1, 2).reshape(b, c, 1, n)
    if t.ndim == 2:
        return t[:, :, None, None]
    raise ModelError(f"cannot read units from an output of shape {tuple(t.shape)}")


def _candidates(model: nn.Module) -> list[str]:
    """Block outputs (elements of Sequential / ModuleList stacks), convolutions and linear layers."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            names.append(name)
        elif isinstance(module, (nn.Sequential, nn.ModuleList)):
            prefix = f"{name}." if name else ""
            names += [prefix + child for child, sub in module.named_children() if any(True for _ in sub.children())]
    return list(dict.fromkeys(names))


def discover(model: nn.Module, input_size: int) -> tuple[Layer, ...]:
    """Finds the layers of a model and their unit counts with one dry forward pass, in execution order."""
    names = _candidates(model)
    order: list[str] = []
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, _o, n=n: order.append(n)) for n in names
    ]
    try:
        with capture(model, names, stop_after_last=False) as outputs, torch.no_grad():
            device = next(model.parameters(), torch.zeros(())).device
            shapes = run(model, torch.zeros(1, 3, input_size, input_size, device=device), outputs)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for name in dict.fromkeys(order):
        out = shapes.get(name)
        if isinstance(out, torch.Tensor) and out.ndim in (2, 3, 4) and out.is_floating_point():
            layers.append(Layer(name, int(as_maps(out).shape[1])))
    if not layers:
        raise ModelError("found no convolution, linear or block layers in this model")
    return tuple(layers)


def with_layers(spec: ModelSpec, model: nn.Module) -> ModelSpec:
    """The spec with its layers: declared ones checked against the module tree, or discovered ones."""
    if not spec.layers:
        return dataclasses.replace(spec, layers=discover(model, spec.input_size))
    modules = dict(model.named_modules())
    for layer in spec.layers:
        if layer.name not in modules:
            raise ModelError(f"model {spec.id} has no module {layer.name!r}")
    return spec


@dataclasses.dataclass(frozen=True)
class Geometry:
    height: int  # of the unit's activation map
    width: int
    rf_px: int  # side of the square input patch that drives one position (effective receptive field)


def geometry(model: nn.Module, spec: ModelSpec, images: torch.Tensor, mass: float = 0.9) -> dict[str, Geometry]:
    """Map sizes and effective receptive fields, from input gradients of each layer's centre position.

    The receptive field is the smallest square, centred on the position's gradient centroid, that holds
    `mass` of the absolute input gradient summed over units and images (the "effective" receptive field of
    Luo et al. 2016, which is much smaller than the theoretical one in deep layers).
    """
    result = {}
    size = spec.input_size
    for layer in spec.layers:
        x = images.clone().requires_grad_(True)
        with capture(model, [layer.name]) as outputs, torch.enable_grad():
            maps = as_maps(run(model, x, outputs)[layer.name])
            h, w = maps.shape[-2:]
            if h * w == 1:
                result[layer.name] = Geometry(1, 1, size)
                continue
            maps[:, :, h // 2, w // 2].abs().sum().backward()
        grad = x.grad.abs().sum(dim=(0, 1))
        result[layer.name] = Geometry(int(h), int(w), _square_holding(grad, mass))
    return result


def _square_holding(grad: torch.Tensor, mass: float) -> int:
    total = float(grad.sum())
    size = grad.shape[-1]
    if total <= 0:
        return size
    ys, xs = torch.meshgrid(torch.arange(grad.shape[0]), torch.arange(grad.shape[1]), indexing="ij")
    cy, cx = float((grad * ys).sum() / total), float((grad * xs).sum() / total)
    dist = torch.maximum((ys - cy).abs(), (xs - cx).abs()).flatten()
    order = torch.argsort(dist)
    cumulative = torch.cumsum(grad.flatten()[order], 0) / total
    reach = float(dist[order][int(torch.searchsorted(cumulative, torch.tensor(mass)))])
    return int(min(size, max(1, math.ceil(2 * reach + 1))))
