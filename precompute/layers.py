"""Layer geometry: discovering the layers of a model no one described, and the receptive field of each."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from precompute.hooks import CHANNELS_LAST, capture, run
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


SHORT = 12  # a model with at most this many layers found gets all of them by default


def block_outputs(model: nn.Module) -> list[str]:
    """The significant places of a model: timm's `feature_info` where the model has one (its stage outputs),
    else the blocks of its top-level sequence: the children of the one Sequential/ModuleList that holds the
    network (ViT's `blocks`, DenseNet's `features`), or several such stacks themselves (ResNet's stages), or,
    with no stack at the top, the top-level modules that hold others (GoogLeNet's inception modules)."""
    modules = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    try:
        named = [entry["module"] for entry in info or ()]
    except (TypeError, KeyError):
        named = []
    if named and all(name in modules for name in named):
        return named
    node, prefix = model, ""
    while True:
        if isinstance(node, (nn.Sequential, nn.ModuleList)):
            blocks = [prefix + n for n, c in node.named_children() if _holds_units(c)]
            if len(blocks) >= 2:
                return blocks
        kids = [(prefix + n, c) for n, c in node.named_children() if any(True for _ in c.children())]
        stacks = [(n, c) for n, c in kids if isinstance(c, (nn.Sequential, nn.ModuleList))]
        if len(stacks) == 1:
            node, prefix = stacks[0][1], stacks[0][0] + "."
            continue
        return [n for n, _ in (stacks if stacks else kids)]


def _holds_units(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear)) or any(True for _ in module.children())


def discover_sets(model: nn.Module, input_size: int) -> tuple[tuple[Layer, ...], tuple]:
    """Every layer found (`discover`, block outputs included) and the named sets of `--layers` (ModelSpec
    .layer_sets): "default", the block outputs in execution order (every layer where few are found, or where
    no block output yields units), "convs", every convolution, and "unbatched", the modules left out because
    their outputs do not keep the batch first (so that asking for one by name says why)."""
    blocks = block_outputs(model)
    unbatched: list[str] = []
    layers = discover(model, input_size, extra=blocks, unbatched=unbatched)
    names = [layer.name for layer in layers]
    chosen = set(blocks)
    default = [n for n in names if n in chosen]
    if len(names) <= SHORT or not default:
        default = names
    modules = dict(model.named_modules())
    convs = [n for n in names if isinstance(modules[n], nn.Conv2d)]
    return layers, (("default", tuple(default)), ("convs", tuple(convs)), ("unbatched", tuple(unbatched)))


def discover(model: nn.Module, input_size: int, extra: list[str] = (), unbatched: list | None = None
             ) -> tuple[Layer, ...]:
    """Finds the layers of a model and their unit counts with one dry forward pass, in execution order.
    `extra`: modules to try besides the convolutions, linear layers and blocks found by type. The pass runs two
    images: an output whose first dimension is not the batch (unfolded patches, say) holds no units, and its
    module is added to `unbatched` where that list is given."""
    names = list(dict.fromkeys([*_candidates(model), *extra]))
    order: list[str] = []
    modules = dict(model.named_modules())
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, _o, n=n: order.append(n)) for n in names
    ]
    try:
        with capture(model, names, stop_after_last=False) as outputs, torch.no_grad():
            device = next(model.parameters(), torch.zeros(())).device
            shapes = run(model, torch.zeros(2, 3, input_size, input_size, device=device), outputs)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for name in dict.fromkeys(order):
        out = shapes.get(name)
        if isinstance(out, torch.Tensor) and out.ndim in (2, 3, 4) and out.is_floating_point():
            if len(out) == 2:
                last = channels_last(modules[name], out)
                layers.append(Layer(name, int(out.shape[-1] if last else as_maps(out).shape[1]), channels_last=last))
            elif unbatched is not None:
                unbatched.append(name)
    if not layers:
        raise ModelError("found no convolution, linear or block layers in this model")
    return tuple(layers)


def channels_last(module: nn.Module, out: torch.Tensor) -> bool:
    """Whether a 4-D output of a square input is (batch, height, width, channels). The map is square and the
    channels are the odd dimension out: (b, c, h, h) is channels-first, (b, h, h, c) channels-last; where all
    three agree, a linear layer or a layer norm (which act on the last dimension) says channels-last."""
    if out.ndim != 4:
        return False
    _, a, b, c = out.shape
    if b == c and a != b:
        return False
    if a == b and b != c:
        return True
    return isinstance(module, (nn.Linear, nn.LayerNorm))


def with_layers(spec: ModelSpec, model: nn.Module) -> ModelSpec:
    """The spec with its layers, declared ones checked against the module tree, or discovered ones; modules
    whose maps are channels-last are marked so that every capture reads them channels-first (`hooks`)."""
    if not spec.layers:
        layers, sets = discover_sets(model, spec.input_size)
        spec = dataclasses.replace(spec, layers=layers, layer_sets=sets)
    modules = dict(model.named_modules())
    for layer in spec.layers:
        if layer.name not in modules:
            raise ModelError(f"model {spec.id} has no module {layer.name!r}")
        setattr(modules[layer.name], CHANNELS_LAST, layer.channels_last)
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
