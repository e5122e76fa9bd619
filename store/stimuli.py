"""Synthetic stimulus families for tuning curves: small pure functions, numpy only (the dashboard imports this
module to show the stimuli beside the curves, and the app never imports torch).

A family is data: a name, a version, its axes (the parameters it varies, as a function of the image side) and
a `draw(size, **values)` that returns one RGB image, float32 in [0, 1], shape (size, size, 3). A new family
is one more entry in `FAMILIES`. Every image is antialiased: gratings are box-filtered analytically (a
sinusoid averaged over a pixel is the sinusoid times a sinc), shapes get the coverage of a one-pixel ramp
on their exact distance field, so no stimulus aliases and none depends on sub-pixel luck.

Angles are in degrees, counter-clockwise from the +x axis as seen on screen (y points up), so 0° is
horizontal and 90° vertical. Geometric sizes scale with the image side, so a thumbnail is a faithful
small copy of what the model saw.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Axis:
    name: str
    unit: str                    # for people and plot labels: deg, cycles/image, px, ...
    values: tuple[float, ...]
    period: float | None = None  # circular axes: 360 (direction, hue, phase) or 180 (orientation)

    def to_json(self) -> dict:
        return {"name": self.name, "unit": self.unit, "values": list(self.values), "period": self.period}


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    version: int
    axes: Callable[[int], tuple[Axis, ...]]
    draw: Callable[..., np.ndarray]
    description: str = ""

    def shape(self, size: int) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes(size))

    def settings(self, size: int) -> list[dict[str, float]]:
        """Every stimulus's parameter values, row-major over the axes (the last axis varies fastest)."""
        axes = self.axes(size)
        return [dict(zip((a.name for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]

    def render(self, size: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Stimuli [start, stop) of the grid as one (n, size, size, 3) float32 batch."""
        return np.stack([self.draw(size, **s) for s in self.settings(size)[start:stop]]).astype(np.float32)


def steps(start: float, stop: float, n: int) -> tuple[float, ...]:
    """n evenly spaced values over [start, stop), rounded for readable labels."""
    return tuple(round(start + (stop - start) * i / n, 4) for i in range(n))


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres relative to the image centre, y up."""
    c = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return c[None, :], -c[:, None]


def _grey(value: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(value, 0.0, 1.0)[..., None], 3, axis=-1).astype(np.float32)


def _coverage(distance: np.ndarray, half_width: float) -> np.ndarray:
    """How much of each pixel a stroke of the given half width covers (a one-pixel linear ramp)."""
    return np.clip(half_width + 0.5 - distance, 0.0, 1.0)


def _stroke(size: int) -> float:
    return max(1.0, size / 75)  # 3 px at 224 px


# ---- gratings ----------------------------------------------------------------------------------------------


def grating(size: int, orientation: float, frequency: float, phase: float) -> np.ndarray:
    """A full-contrast sinusoidal grating whose stripes run along `orientation`; `frequency` in cycles per
    image side, `phase` in degrees at the centre."""
    x, y = _coords(size)
    normal = np.deg2rad(orientation + 90)
    k = 2 * np.pi * frequency / size  # radians per pixel along the normal
    kx, ky = k * np.cos(normal), k * np.sin(normal)
    # Mean of sin over a pixel square = sin at its centre x sinc along each axis (np.sinc(t) = sin(pi t)/(pi t)).
    blur = np.sinc(kx / (2 * np.pi)) * np.sinc(ky / (2 * np.pi))
    return _grey(0.5 + 0.5 * blur * np.sin(kx * x + ky * y + np.deg2rad(phase)))


def _grating_axes(size: int) -> tuple[Axis, ...]:
    top = min(32.0, size / 4)  # octaves up to a 7 px period at 224 px, never finer than 4 px
    return (Axis("orientation", "deg", steps(0, 180, 12), 180),
            Axis("frequency", "cycles/image", tuple(round(top / 2 ** i, 2) for i in (3, 2, 1, 0))),
            Axis("phase", "deg", steps(0, 360, 4), 360))


# ---- curves ------------------------------------------------------------------------------------------------

CORNER = 90  # the arc's span in degrees: a rounded right-angle corner


def curve(size: int, orientation: float, radius: float) -> np.ndarray:
    """A rounded corner (a dark stroke on white): a 90° circular arc of `radius` px with straight legs
    continuing along its tangents, its apex at the image centre, its convex side facing `orientation`.
    Curve Detectors (Cammarata et al., Distill 2020) probe curve units with such stimuli."""
    x, y = _coords(size)
    theta = np.deg2rad(orientation)
    cx, cy = -radius * np.cos(theta), -radius * np.sin(theta)  # circle centre: the apex sits at the origin
    vx, vy = x - cx, y - cy
    offset = (np.rad2deg(np.arctan2(vy, vx)) - orientation + 180) % 360 - 180
    distance = np.where(np.abs(offset) <= CORNER / 2, np.abs(np.hypot(vx, vy) - radius), np.inf)
    leg = size / 8
    for sign in (1, -1):
        end = theta + sign * np.deg2rad(CORNER / 2)
        ex, ey = cx + radius * np.cos(end), cy + radius * np.sin(end)
        tx, ty = -sign * np.sin(end), sign * np.cos(end)  # tangent, pointing away from the apex
        along = np.clip((x - ex) * tx + (y - ey) * ty, 0, leg)
        distance = np.minimum(distance, np.hypot(x - ex - along * tx, y - ey - along * ty))
    return _grey(1.0 - _coverage(distance, _stroke(size) / 2))


def _curve_axes(size: int) -> tuple[Axis, ...]:
    return (Axis("orientation", "deg", steps(0, 360, 24), 360),
            Axis("radius", "px", tuple(round(size * f, 1) for f in (1 / 32, 1 / 16, 1 / 8, 1 / 4))))


# ---- colour ------------------------------------------------------------------------------------------------


def hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """One colour, hue in degrees."""
    k = (np.array([5.0, 3.0, 1.0]) + hue / 60) % 6
    return value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)


def colour(size: int, hue: float, saturation: float) -> np.ndarray:
    """A uniform field of one colour at full brightness."""
    return np.broadcast_to(hsv_to_rgb(hue, saturation, 1.0).astype(np.float32), (size, size, 3)).copy()


def _colour_axes(size: int) -> tuple[Axis, ...]:
    return (Axis("hue", "deg", steps(0, 360, 24), 360), Axis("saturation", "", (0.33, 0.67, 1.0)))


# ---- edges and lines ---------------------------------------------------------------------------------------


def edge(size: int, orientation: float, position: float) -> np.ndarray:
    """A straight light/dark edge running along `orientation` (over 360°: the light side lies to the left of
    the direction, so 0° is light above, 90° light on the left), shifted `position` px along its normal."""
    x, y = _coords(size)
    theta = np.deg2rad(orientation)
    signed = -np.sin(theta) * x + np.cos(theta) * y - position
    return _grey(0.5 + signed)


def _edge_axes(size: int) -> tuple[Axis, ...]:
    shift = round(size / 16, 1)
    return (Axis("orientation", "deg", steps(0, 360, 24), 360), Axis("position", "px", (-shift, 0.0, shift)))


def line(size: int, orientation: float, width: float) -> np.ndarray:
    """A dark straight line through the centre along `orientation` (a line is its own 180° turn)."""
    x, y = _coords(size)
    theta = np.deg2rad(orientation)
    return _grey(1.0 - _coverage(np.abs(-np.sin(theta) * x + np.cos(theta) * y), width / 2))


def _line_axes(size: int) -> tuple[Axis, ...]:
    return (Axis("orientation", "deg", steps(0, 180, 24), 180),
            Axis("width", "px", tuple(round(max(1.0, size * f), 1) for f in (1 / 112, 1 / 28, 1 / 8))))


def uniform_grey(size: int) -> np.ndarray:
    """The blank: no stimulus, a mid-grey field (each unit's baseline response)."""
    return np.full((size, size, 3), 0.5, dtype=np.float32)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gratings", "Gratings", 1, _grating_axes, grating,
           "sinusoidal gratings: orientation x spatial frequency x phase"),
    Family("curves", "Curves", 1, _curve_axes, curve, "rounded corners: orientation x radius"),
    Family("colour", "Colour", 1, _colour_axes, colour, "uniform colour fields: hue x saturation"),
    Family("edges", "Edges", 1, _edge_axes, edge, "light/dark edges: orientation (360°) x position"),
    Family("lines", "Lines", 1, _line_axes, line, "dark lines: orientation x width"),
)}
