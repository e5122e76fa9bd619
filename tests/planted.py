"""A planted feature bank whose best images are known: Gabor filters and colour-opponent blobs, one layer, ReLU.

Issue 15's test case. Each Gabor unit is a 9x9 kernel (the same on R, G and B) of one wavelength and
orientation; the best image for its `channel` objective (mean activation over the map) is a full-field grating
at the filter's orientation and wavelength, whose activation `optimum` finds numerically. The opponent units
weigh one colour against its opponent through a Gaussian blob, so their best image is a flat colour field.
Used by tests/precompute/optvis/test_planted.py and benchmarks/bench_planted.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from precompute.models import Layer, ModelSpec

KERNEL = 9
INPUT = 64
LAYER = "1"  # the ReLU after the bank
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)  # pixels in [0, 1] become [-1, 1], so mid-grey is the zero input


@dataclass(frozen=True)
class Gabor:
    wavelength: float  # pixels per period
    degrees: float  # direction of the intensity change (of the spatial-frequency vector), 0 = along x


def gabors(count: int = 8, wavelengths: tuple[float, ...] = (4, 5, 6, 8, 10)) -> list[Gabor]:
    """`count` orientations evenly over 180 degrees, cycling through `wavelengths`."""
    return [Gabor(wavelengths[i % len(wavelengths)], 180 * i / count) for i in range(count)]


def gabor_kernel(g: Gabor) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(KERNEL, dtype=torch.float64) - KERNEL // 2,
                            torch.arange(KERNEL, dtype=torch.float64) - KERNEL // 2, indexing="ij")
    a = math.radians(g.degrees)
    along = xx * math.cos(a) + yy * math.sin(a)
    envelope = torch.exp(-(xx ** 2 + yy ** 2) / (2 * 2.5 ** 2))
    k = torch.cos(2 * math.pi * along / g.wavelength) * envelope
    k = (k - (k * envelope).sum() / envelope.sum() * envelope)  # no response to a flat field
    return k / k.abs().sum()  # a +-1 input then gives at most 1 per colour


# Opponent blobs: (R, G, B) weights of a Gaussian blob. Red-green and blue-yellow, as in early convnets.
OPPONENTS = ((1.0, -1.0, 0.0), (-0.5, -0.5, 1.0))


def bank(units: list[Gabor] | None = None, opponents: bool = True) -> nn.Module:
    """Conv 9x9 (padding 4, so the map is the input's size) then ReLU; Gabor units first, then opponents."""
    units = gabors() if units is None else units
    kernels = [gabor_kernel(g).expand(3, KERNEL, KERNEL) / 3 for g in units]
    if opponents:
        yy, xx = torch.meshgrid(torch.arange(KERNEL, dtype=torch.float64) - KERNEL // 2,
                                torch.arange(KERNEL, dtype=torch.float64) - KERNEL // 2, indexing="ij")
        blob = torch.exp(-(xx ** 2 + yy ** 2) / (2 * 2.0 ** 2))
        blob = blob / blob.sum()
        for weights in OPPONENTS:
            w = torch.tensor(weights, dtype=torch.float64)
            kernels.append(w[:, None, None] * blob / w.abs().sum())
    conv = nn.Conv2d(3, len(kernels), KERNEL, padding=KERNEL // 2, bias=False)
    conv.weight.data = torch.stack(kernels).float()
    return nn.Sequential(conv, nn.ReLU()).eval().requires_grad_(False)


def spec(units: int, input_size: int = INPUT) -> ModelSpec:
    return ModelSpec(id="planted.gabor", arch="gabor_bank", source="factory", input_size=input_size,
                     mean=MEAN, std=STD, layers=(Layer(LAYER, units),))


def grating(g: Gabor, size: int, phase: float, square: bool, wavelength: float | None = None) -> np.ndarray:
    """A full-field grey grating in [0, 1], (size, size, 3)."""
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    a = math.radians(g.degrees)
    wave = np.cos(2 * np.pi * (xx * math.cos(a) + yy * math.sin(a)) / (wavelength or g.wavelength) + phase)
    wave = np.sign(wave) if square else wave
    return np.repeat((0.5 + 0.5 * wave)[..., None], 3, axis=-1)


def optimum(model: nn.Module, units: list[Gabor], size: int = INPUT) -> np.ndarray:
    """Each Gabor unit's best mean activation over full-field gratings at its orientation (sine or square
    profile, 8 phases, wavelengths within 20% of its own): the reference its renders are measured against."""
    best = np.zeros(len(units))
    for i, g in enumerate(units):
        images = np.stack([grating(g, size, p, sq, g.wavelength * s) for sq in (False, True)
                           for p in np.linspace(0, 2 * np.pi, 8, endpoint=False) for s in (0.8, 0.9, 1.0, 1.1, 1.2)])
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 0.5) / 0.5
        with torch.no_grad():
            best[i] = float(model(x)[:, i].mean(dim=(-2, -1)).max())
    return best


def spectrum_orientation(image: np.ndarray) -> float:
    """The dominant direction (degrees in [0, 180)) of the grey image's spatial frequencies: the power-weighted
    mean of the doubled angles of the 2-D FFT's frequency vectors (so 10 and 170 degrees average to 0)."""
    grey = image.astype(np.float64).mean(axis=-1)
    grey = (grey - grey.mean()) * np.outer(np.hanning(grey.shape[0]), np.hanning(grey.shape[1]))
    power = np.abs(np.fft.fft2(grey)) ** 2
    fy = np.fft.fftfreq(grey.shape[0])[:, None]
    fx = np.fft.fftfreq(grey.shape[1])[None, :]
    angle = 2 * np.arctan2(fy, fx)
    c, s = (power * np.cos(angle)).sum(), (power * np.sin(angle)).sum()
    return float(np.degrees(0.5 * np.arctan2(s, c)) % 180)


def angle_error(a: float, b: float) -> float:
    """Distance between two orientations in degrees (mod 180)."""
    d = abs(a - b) % 180
    return min(d, 180 - d)
