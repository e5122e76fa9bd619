"""Image parameterisations: what the optimiser changes, and how that becomes a batch of RGB images in [0, 1].

Each parameterisation is a pure function `(batch, size, generator, device, ...) -> (params, image_fn)`:
`params` are the leaf tensors handed to the optimiser, `image_fn()` returns (batch, 3, H, W) in [0, 1].
Every batch element has its own parameters, so batch elements never interact through the image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from precompute.optvis import rng

ImageFn = Callable[[], torch.Tensor]

# Square root of ImageNet's colour correlation (its eigen-decomposition, scaled), from Lucid:
# lucid/optvis/param/color.py (`color_correlation_svd_sqrt`). Optimising in this basis decorrelates colour,
# so one step changes luminance and the two opponent channels independently instead of R, G and B.
COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]], dtype=np.float32)
# Lucid normalises it by its largest column norm (same file, `max_norm_svd_sqrt`).
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
# Lucid's spectrum init scale `sd=0.01` and its unexplained divisor 4 ("is that a magic constant?") in
# lucid/optvis/param/spatial.py `fft_image`; kept so our learning rate means what Lucid's and Lucent's does.
INIT_SD = 0.01
FFT_MAGIC = 4.0


def decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    """Maps (B, 3, H, W) from the decorrelated colour basis to RGB (before the sigmoid)."""
    matrix = torch.as_tensor(COLOR_CORRELATION, device=t.device, dtype=t.dtype)
    # A (3, 3) @ (B, 3, H*W) matmul: on the 2-core CPU, forwards and backwards, 6x faster than the same
    # product as an einsum, which became one (B*H*W, 3) @ (3, 3) matmul (18 ms a step at 8 x 128 px).
    return (matrix @ t.flatten(2)).view_as(t)


def to_valid_rgb(t: torch.Tensor, decorrelate: bool = True) -> torch.Tensor:
    """Unbounded parameters to pixels in [0, 1]: optional colour decorrelation, then a sigmoid (Lucid's default)."""
    return torch.sigmoid(decorrelated_to_rgb(t) if decorrelate else t)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Spatial frequency magnitude of each coefficient of a real 2-D FFT of an (h, w) image."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """1/f amplitude scaling (natural images' spectrum), floored at the lowest frequency (Lucid's `fft_image`).

    Adam then takes equal-size steps on every coefficient, so low frequencies dominate the image early and
    the optimiser is not drawn into high-frequency adversarial patterns.
    """
    return 1.0 / np.maximum(rfft2d_freqs(h, w), 1.0 / max(h, w)) ** decay_power


def fourier(batch: int, size: int | tuple[int, int], generator: rng.Generators, device: str | torch.device = "cpu",
            *, sd: float = INIT_SD, decay_power: float = 1.0,
            decorrelate: bool = True) -> tuple[list[torch.Tensor], ImageFn]:
    """Lucid's default image: real and imaginary 2-D Fourier coefficients per channel, 1/f scaled,
    decorrelated colour."""
    h, w = (size, size) if isinstance(size, int) else size
    _check(batch, h, w)
    freqs_shape = (h, w // 2 + 1)
    spectrum = (rng.normal(generator, batch, (3, *freqs_shape, 2)) * sd).to(device).requires_grad_(True)
    scale = torch.as_tensor(spectrum_scale(h, w, decay_power), dtype=torch.float32, device=device)

    def image() -> torch.Tensor:
        coefficients = torch.view_as_complex(spectrum) * scale
        # norm="ortho" is Lucid's explicit sqrt(w*h) rescaling: a unitary transform, so pixel-space learning
        # rates carry over.
        pixels = torch.fft.irfft2(coefficients, s=(h, w), norm="ortho") / FFT_MAGIC
        return to_valid_rgb(pixels, decorrelate)

    return [spectrum], image


def pixels(batch: int, size: int | tuple[int, int], generator: rng.Generators, device: str | torch.device = "cpu",
           *, sd: float = INIT_SD, decorrelate: bool = True) -> tuple[list[torch.Tensor], ImageFn]:
    """Plain pixels (Lucid's `pixel_image`), through the same colour basis and sigmoid as `fourier`."""
    h, w = (size, size) if isinstance(size, int) else size
    _check(batch, h, w)
    values = (rng.normal(generator, batch, (3, h, w)) * sd).to(device).requires_grad_(True)
    return [values], lambda: to_valid_rgb(values, decorrelate)


PARAMS: dict[str, Callable[..., tuple[list[torch.Tensor], ImageFn]]] = {"fourier": fourier, "pixel": pixels}


def _check(batch: int, h: int, w: int) -> None:
    if batch <= 0 or h <= 0 or w <= 0:
        raise ValueError(f"an image batch needs a positive batch and size, got batch={batch}, size={h}x{w}")
