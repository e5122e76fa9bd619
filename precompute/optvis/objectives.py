"""Objectives: what an image should make the model do, as a score per batch element (higher is better).

An objective is a function of captured activations, `{layer: (B, C, H, W)}`, returning a (B,) vector; the
renderer maximises its sum. Objectives compose like numbers (`a + 0.5 * b`, `-a`, `a - b`, `a / 2`),
and a batch objective gives each element its own target (`channels(layer, [3, 7, 9])`: element i shows
unit i's channel), which is what lets one optimisation render many units at once.

Each objective knows which layers it reads, how many batch elements it describes (`batch`, None for any),
and how far its elements are coupled (`block`: 1 when elements are independent, k when groups of k
consecutive elements interact as in `diversity`, 0 when the whole batch does), so the renderer can split a
batch that does not fit in memory without changing what any element optimises (`restrict`).

An objective is `pooled` when its score pools over every position of the layer (a channel's mean, DeepDream,
a direction, diversity's Gram matrices) rather than reading given positions (`neuron`, `caricature`). For a
pooled objective, a random window of the model's view is a fair sample of the whole view, which is what
lets the renderer show the model only a window per step (`render`'s `window`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from store.errors import MicroscopeError

Acts = Mapping[str, torch.Tensor]
Score = Callable[[Acts], torch.Tensor]


class ObjectiveError(MicroscopeError, ValueError):
    """An objective that cannot be evaluated on these activations (unknown unit, wrong batch, bad target)."""


@dataclass(frozen=True, eq=False)
class Objective:
    fn: Score
    layers: tuple[str, ...]
    name: str
    batch: int | None = None
    block: int = 1
    # restrict(start, stop): the same objective for batch elements [start, stop) only.
    restrict: Callable[[int, int], Objective] | None = None
    pooled: bool = False  # the score pools over all positions of its layers (see the module docstring)

    def __call__(self, acts: Acts) -> torch.Tensor:
        batch = next(iter(acts.values())).shape[0] if acts else None
        if self.batch is not None and batch is not None and batch != self.batch:
            raise ObjectiveError(f"{self.name} describes {self.batch} batch elements, the batch has {batch}")
        return self.fn(acts)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            if other == 0:  # lets sum() start from 0
                return self
            return NotImplemented
        if not isinstance(other, Objective):
            return NotImplemented
        return _combine(self, other, 1.0, f"{self.name} + {other.name}")

    __radd__ = __add__

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return _combine(self, other, -1.0, f"{self.name} - {_paren(other.name)}")

    def __neg__(self) -> Objective:
        return self * -1

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            raise TypeError(f"objectives multiply by numbers only, not {type(k).__name__}")
        k = float(k)
        name = f"-{_paren(self.name)}" if k == -1 else f"{k:g} * {_paren(self.name)}"
        return Objective(lambda acts: k * self.fn(acts), self.layers, name, self.batch, self.block,
                         lambda s, e: self.select(s, e) * k, self.pooled)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        return self * (1.0 / k)

    def select(self, start: int, stop: int) -> Objective:
        """This objective for batch elements [start, stop); whole coupled blocks only."""
        if self.block == 0 and (start, stop) != (0, self.batch):
            raise ObjectiveError(f"{self.name} couples the whole batch; it cannot be split")
        if self.block > 1 and (start % self.block or stop % self.block):
            raise ObjectiveError(f"{self.name} couples groups of {self.block}; split at multiples of {self.block}")
        return self.restrict(start, stop) if self.restrict else self


def _paren(name: str) -> str:
    return f"({name})" if (" + " in name or " - " in name) else name


def _combine(a: Objective, b: Objective, sign: float, name: str) -> Objective:
    if a.batch is not None and b.batch is not None and a.batch != b.batch:
        raise ObjectiveError(f"cannot combine objectives over {a.batch} and {b.batch} batch elements")
    if a.block == 0 or b.block == 0:
        block = 0
    else:
        block = a.block * b.block // math.gcd(a.block, b.block)
    layers = tuple(dict.fromkeys(a.layers + b.layers))
    return Objective(lambda acts: a.fn(acts) + sign * b.fn(acts), layers, name,
                     a.batch if a.batch is not None else b.batch, block,
                     lambda s, e: _combine(a.select(s, e), b.select(s, e), sign, name), a.pooled and b.pooled)


def _maps(acts: Acts, layer: str) -> torch.Tensor:
    if layer not in acts:
        raise ObjectiveError(f"no activations captured for layer {layer!r}")
    a = acts[layer]
    if a.ndim != 4:
        raise ObjectiveError(f"layer {layer!r} gave a {a.ndim}-D output; objectives need (B, C, H, W) maps")
    return a.float()


def _per_element(name: str, layer: str, values: tuple | None, build: Callable[[tuple | None], Score],
                 pooled: bool) -> Objective:
    """An objective with one parameter per batch element (`values`), or one for all (`values` None)."""
    return Objective(build(values), (layer,), name, None if values is None else len(values), 1,
                     None if values is None else lambda s, e: _per_element(name, layer, values[s:e], build, pooled),
                     pooled)


def _unit_index(a: torch.Tensor, units: tuple[int, ...] | int, layer: str) -> torch.Tensor:
    count = a.shape[1]
    wanted = (units,) if isinstance(units, int) else units
    bad = [u for u in wanted if not 0 <= u < count]
    if bad:
        raise ObjectiveError(f"unit {bad[0]} is out of range for layer {layer!r}, "
                             f"which has {count} units (0..{count - 1})")
    if isinstance(units, int):
        return torch.full((a.shape[0],), units, dtype=torch.long, device=a.device)
    if len(units) != a.shape[0]:
        raise ObjectiveError(f"{len(units)} units for a batch of {a.shape[0]}")
    return torch.as_tensor(units, dtype=torch.long, device=a.device)


def _units(unit: int | Sequence[int]) -> tuple[int, ...] | int:
    if isinstance(unit, bool):
        raise ObjectiveError("a unit is an integer")
    if isinstance(unit, int):
        return unit
    units = tuple(int(u) for u in unit)
    if not units:
        raise ObjectiveError("a batch objective needs at least one unit")
    return units


def channel(layer: str, unit: int | Sequence[int]) -> Objective:
    """Mean activation of a unit's whole channel; with a list of units, element i gets units[i]."""
    units = _units(unit)

    def build(values):
        chosen = units if values is None else values

        def fn(acts):
            a = _maps(acts, layer)
            index = _unit_index(a, chosen, layer)
            return a[torch.arange(a.shape[0], device=a.device), index].mean(dim=(-2, -1))

        return fn

    return _per_element(f"channel({layer}, {unit})", layer, None if isinstance(units, int) else units, build,
                        pooled=True)


def channels(layer: str, units: Sequence[int]) -> Objective:
    """The batch objective: element i maximises the mean activation of units[i]."""
    return channel(layer, list(units))


def neuron(layer: str, unit: int | Sequence[int]) -> Objective:
    """A unit's activation at the centre position (for even sizes, the lower right of the middle four, as Lucent)."""
    units = _units(unit)

    def build(values):
        chosen = units if values is None else values

        def fn(acts):
            a = _maps(acts, layer)
            index = _unit_index(a, chosen, layer)
            h, w = a.shape[-2:]
            return a[torch.arange(a.shape[0], device=a.device), index, h // 2, w // 2]

        return fn

    return _per_element(f"neuron({layer}, {unit})", layer, None if isinstance(units, int) else units, build,
                        pooled=False)


def neurons(layer: str, units: Sequence[int]) -> Objective:
    return neuron(layer, list(units))


def negative(layer: str, unit: int | Sequence[int]) -> Objective:
    """What a unit responds to least: minimise its channel mean."""
    return -channel(layer, unit)


def deepdream(layer: str) -> Objective:
    """Mean squared activation of the whole layer (Mordvintsev et al. 2015): amplify whatever the layer sees."""

    def fn(acts):
        return _maps(acts, layer).pow(2).mean(dim=(1, 2, 3))

    return Objective(fn, (layer,), f"deepdream({layer})", pooled=True)


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Mean projection of each position's activation vector on a direction of the layer's unit space.

    `vector` is (C,) for one direction, or (B, C) for one per batch element. Its length does not matter.
    """
    v = torch.as_tensor(vector, dtype=torch.float32)
    if v.ndim not in (1, 2) or v.shape[-1] == 0:
        raise ObjectiveError(f"a direction is a (C,) or (B, C) vector, got shape {tuple(v.shape)}")
    norms = v.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        raise ObjectiveError("a direction must not be the zero vector")
    unit_v = v / norms
    rows = None if unit_v.ndim == 1 else tuple(unit_v)

    def build(values):
        def fn(acts):
            a = _maps(acts, layer)
            d = unit_v if values is None else torch.stack(values)
            if d.shape[-1] != a.shape[1]:
                raise ObjectiveError(f"direction has {d.shape[-1]} entries, layer {layer!r} has {a.shape[1]} units")
            d = d.to(a.device)
            return torch.einsum("bchw,...c->bhw", a, d).mean(dim=(-2, -1)) if d.ndim == 1 else \
                torch.einsum("bchw,bc->bhw", a, d).mean(dim=(-2, -1))

        return fn

    return _per_element(f"direction({layer})", layer, rows, build, pooled=True)


def diversity(layer: str, group: int | None = None) -> Objective:
    """Penalises style similarity across the batch (Lucid's `diversity`), so several images of one unit differ.

    Each element's Gram matrix of the layer (channel correlations over positions) is L2-normalised, and
    element i scores minus its summed cosine similarity with the others, divided by the group size, so
    the batch total equals minus Lucid's value. With `group=k`, only elements within the same k consecutive
    elements are compared: a batch of many units times k images each diversifies each unit's own images.
    """
    if group is not None and group < 2:
        raise ObjectiveError("diversity compares at least 2 images per group")

    def fn(acts):
        a = _maps(acts, layer)
        b, c = a.shape[:2]
        size = group or b
        if b % size:
            raise ObjectiveError(f"a batch of {b} does not split into diversity groups of {size}")
        flat = a.reshape(b, c, -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(b, -1), dim=1)
        grams = grams.reshape(b // size, size, -1)
        similarity = grams @ grams.transpose(1, 2)  # (groups, size, size)
        off_diagonal = similarity.sum(dim=2) - similarity.diagonal(dim1=1, dim2=2)
        return -(off_diagonal / size).reshape(b)

    return Objective(fn, (layer,), f"diversity({layer})", None, group or 0, pooled=True)


# Lucid's caricature recipe floors its cosine term at 0.1 (lucid/recipes/caricature.py, `dot_compare`), so
# a start that points away from the photo still gets a gradient from the dot product.
CARICATURE_COSINE_FLOOR = 0.1


def caricature(layer: str, target: torch.Tensor, power: float = 1.0) -> Objective:
    """Exaggerate what the layer sees in a photo: dot(acts, target) * cos(acts, target) ** power.

    `target` is the photo's activations at `layer` (C, H, W), or (B, C, H, W) for one photo per element,
    computed at the renderer's input size (see `render.activations`). Lucid's `dot_compare` multiplies the
    dot product by a cosine-like term to the power `cossim_pow`; here the cosine is the true one and the
    dot product is taken with the unit-length target, so the score does not depend on the photo's scale.
    """
    t = torch.as_tensor(target, dtype=torch.float32).detach()
    if t.ndim not in (3, 4):
        raise ObjectiveError(f"caricature targets are (C, H, W) or (B, C, H, W) activations, got {tuple(t.shape)}")
    if float(t.norm()) == 0:
        raise ObjectiveError("the caricature target's activations are all zero")
    rows = None if t.ndim == 3 else tuple(t)

    def build(values):
        def fn(acts):
            a = _maps(acts, layer)
            ref = (t if values is None else torch.stack(values)).to(a.device)
            if ref.shape[-3:] != a.shape[-3:]:
                raise ObjectiveError(f"caricature target has shape {tuple(ref.shape[-3:])}, layer {layer!r} "
                                     f"gives {tuple(a.shape[-3:])}: compute it at the render's input size")
            ref = ref.expand_as(a).reshape(a.shape[0], -1)
            flat = a.reshape(a.shape[0], -1)
            dot = (flat * F.normalize(ref, dim=1)).sum(dim=1)
            cos = F.cosine_similarity(flat, ref, dim=1, eps=1e-8).clamp(min=CARICATURE_COSINE_FLOOR)
            return dot * cos.pow(power)

        return fn

    return _per_element(f"caricature({layer}, power={power:g})", layer, rows, build, pooled=False)
