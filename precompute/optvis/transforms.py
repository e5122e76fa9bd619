"""Random, differentiable image transforms applied at every step ("transformation robustness", Lucid).

A transform is a callable `t(images, generator) -> images` on (B, C, H, W), drawing its randomness per batch
element from `generator` (one `torch.Generator`, or one per element; see `rng`).

Lucid's standard set is pad, jitter, scale, rotate, jitter. All of those, and the final resize to the
model's input size, are affine maps of the image plane, so they are `Warp`s: each contributes a (B, 3, 3)
matrix, and `compose` multiplies consecutive warps into one matrix and resamples the image once with
`grid_sample` instead of five times (one interpolation, so also less blur). Points outside the image read
mid-grey, Lucid's padding value, whichever warp moved them there.

Matrices map output coordinates to input coordinates in `affine_grid`'s normalised frame ([-1, 1] across
the image, `align_corners=False`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from precompute.optvis import rng

Size = tuple[int, int]
# Lucid pads with 0.5 (`transform.pad(12, mode="constant", constant_value=.5)`): mid-grey is neutral for the
# sigmoid image.
FILL = 0.5


@dataclass(frozen=True)
class Warp:
    """An affine transform: `matrices(generator, batch, size) -> (B, 3, 3)` and the output size it produces."""

    name: str
    matrices: Callable[[rng.Generators, int, Size], torch.Tensor]
    out_size: Callable[[Size], Size] = lambda size: size

    def __call__(self, images: torch.Tensor, generator: rng.Generators) -> torch.Tensor:
        return compose([self])(images, generator)


Transform = Callable[[torch.Tensor, rng.Generators], torch.Tensor]


def _eye(batch: int) -> torch.Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(batch, 1, 1)


def pad(width: int) -> Warp:
    """Adds `width` pixels of mid-grey border on every side, so jitter and rotation move the image inside a frame."""
    if width < 0:
        raise ValueError(f"pad width must be >= 0, got {width}")

    def matrices(_gen, batch, size):
        h, w = size
        m = _eye(batch)
        m[:, 0, 0] = (w + 2 * width) / w
        m[:, 1, 1] = (h + 2 * width) / h
        return m

    return Warp(f"pad({width})", matrices, lambda s: (s[0] + 2 * width, s[1] + 2 * width))


def jitter(pixels: int) -> Warp:
    """Shifts each image by a random whole number of pixels in [-(d//2), d - 1 - d//2] on each axis.

    Lucid's jitter(d) is a random crop, i.e. a shift of 0..d-1 pixels; centring it keeps the average image
    centred instead of drifting towards one corner.
    """
    if pixels < 1:
        raise ValueError(f"jitter needs at least 1 pixel, got {pixels}")
    offsets = [i - pixels // 2 for i in range(pixels)]

    def matrices(gen, batch, size):
        h, w = size
        dx, dy = rng.choice(gen, batch, offsets), rng.choice(gen, batch, offsets)
        m = _eye(batch)
        m[:, 0, 2] = -2 * dx / w
        m[:, 1, 2] = -2 * dy / h
        return m

    return Warp(f"jitter({pixels})", matrices)


def random_scale(scales: Sequence[float]) -> Warp:
    """Zooms each image about its centre by a factor drawn from `scales` (> 1 magnifies)."""
    if not scales or min(scales) <= 0:
        raise ValueError("random_scale needs positive scales")

    def matrices(gen, batch, _size):
        s = rng.choice(gen, batch, scales)
        m = _eye(batch)
        m[:, 0, 0] = 1 / s
        m[:, 1, 1] = 1 / s
        return m

    return Warp("random_scale", matrices)


def random_rotate(degrees: Sequence[float]) -> Warp:
    """Rotates each image about its centre by an angle drawn from `degrees`."""
    if not degrees:
        raise ValueError("random_rotate needs at least one angle")

    def matrices(gen, batch, size):
        h, w = size
        a = rng.choice(gen, batch, degrees) * (math.pi / 180)
        cos, sin = torch.cos(a), torch.sin(a)
        m = _eye(batch)
        # Rotate in pixel units, not in the normalised frame, so non-square images are not sheared.
        m[:, 0, 0], m[:, 0, 1] = cos, -sin * h / w
        m[:, 1, 0], m[:, 1, 1] = sin * w / h, cos
        return m

    return Warp("random_rotate", matrices)


def resize(size: int | Size) -> Warp:
    """Resamples to a fixed size (bilinear), e.g. the 128 px parameter image to the model's 224 px input."""
    out = (size, size) if isinstance(size, int) else tuple(size)
    return Warp(f"resize({out[0]}x{out[1]})", lambda _g, batch, _s: _eye(batch), lambda _s: out)


def window(side: int) -> Warp:
    """Cuts a random `side` x `side` window out of each image, at a whole-pixel offset drawn uniformly from
    every position where the window fits inside the image (`side` at most the image's sides).

    The renderer's last warp for pooled objectives: the model then sees one window of its input view per
    step instead of the whole view (see `render.render`'s `window`).
    """
    if side < 1:
        raise ValueError(f"a window needs at least 1 pixel, got {side}")

    def matrices(gen, batch, size):
        h, w = size
        # Offsets of the window's corner from the image's, 0..(n - side), measured from the centred window.
        dx = rng.choice(gen, batch, [i - (w - side) / 2 for i in range(max(w - side, 0) + 1)])
        dy = rng.choice(gen, batch, [i - (h - side) / 2 for i in range(max(h - side, 0) + 1)])
        m = _eye(batch)
        m[:, 0, 0] = side / w
        m[:, 1, 1] = side / h
        m[:, 0, 2] = 2 * dx / w
        m[:, 1, 2] = 2 * dy / h
        return m

    return Warp(f"window({side})", matrices, lambda _s: (side, side))


def compose(transforms: Sequence[Transform]) -> Transform:
    """Applies transforms in order; runs of consecutive `Warp`s become one matrix and one resampling."""
    stages: list[Transform | list[Warp]] = []
    for t in transforms:
        if isinstance(t, Warp):
            if stages and isinstance(stages[-1], list):
                stages[-1].append(t)
            else:
                stages.append([t])
        else:
            stages.append(t)

    def apply(images: torch.Tensor, generator: rng.Generators) -> torch.Tensor:
        for stage in stages:
            images = _warp(images, stage, generator) if isinstance(stage, list) else stage(images, generator)
        return images

    return apply


def _warp(images: torch.Tensor, warps: list[Warp], generator: rng.Generators) -> torch.Tensor:
    batch = images.shape[0]
    size: Size = tuple(images.shape[-2:])
    theta = _eye(batch)
    for warp in warps:
        # Output-to-input maps compose right to left: the last warp's output frame is sampled first.
        theta = theta @ warp.matrices(generator, batch, size)
        size = warp.out_size(size)
    if torch.equal(theta, _eye(batch)) and size == tuple(images.shape[-2:]):
        return images
    theta = theta[:, :2].to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [batch, images.shape[1], *size], align_corners=False)
    # A point inside the image but beyond its outermost pixel centres reads the edge pixel (as F.interpolate
    # does), not a blend with the fill: otherwise a plain resize would grey the image's border.
    h, w = images.shape[-2:]
    edge = torch.tensor([1 - 1 / w, 1 - 1 / h], device=grid.device, dtype=grid.dtype)
    grid = torch.where(grid.abs() <= 1, torch.maximum(torch.minimum(grid, edge), -edge), grid)
    # Sampling (x - fill) with zero padding and adding fill back pads with `fill` in one pass.
    return F.grid_sample(images - FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + FILL


# Lucid's `standard_transforms` (lucid/optvis/transform.py), as Lucent uses them: pad 12 with grey, jitter 8,
# scale by 1 + (i - 5) / 50 for i in 0..10, rotate by -10..10 degrees (0 weighted 6 times in 26), jitter 4.
STANDARD: tuple[Warp, ...] = (
    pad(12),
    jitter(8),
    random_scale([1 + (i - 5) / 50 for i in range(11)]),
    random_rotate(list(range(-10, 11)) + 5 * [0]),
    jitter(4),
)

TRANSFORMS: dict[str, tuple[Transform, ...]] = {"standard": STANDARD, "none": ()}
