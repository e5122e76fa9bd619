"""Pictures from stored artefacts: decode, crop to a box, overlay an activation heatmap, encode.

Pure PIL and numpy, shared by precompute (thumbnails), the CLI (`unit --images`) and the dashboard.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

HEAT_COLOUR = np.array([255, 140, 0], dtype=np.float32)  # warm orange reads on both dark and light photos


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str = "WEBP", quality: int = 88) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, quality=quality, method=4) if fmt == "WEBP" else image.save(buf, format=fmt)
    return buf.getvalue()


def crop(image: Image.Image, box: tuple[int, int, int, int], size: int | None = None) -> Image.Image:
    """The box (left, top, right, bottom) of the image, resized to `size` pixels square if given."""
    out = image.crop(tuple(int(v) for v in box))
    if size and out.size != (size, size):
        out = out.resize((size, size), Image.NEAREST if out.width < size // 2 else Image.BICUBIC)
    return out


def heat_array(data: bytes | None, cells: int) -> np.ndarray | None:
    if not data or cells <= 0:
        return None
    return np.frombuffer(data, dtype=np.float16).astype(np.float32).reshape(cells, cells)


def overlay(image: Image.Image, heat: np.ndarray | None, vmax: float) -> Image.Image:
    """Tints the image by where the unit fires: heat / vmax, clipped to [0, 1], smoothly upsampled."""
    if heat is None or vmax <= 0:
        return image
    level = np.clip(heat / vmax, 0.0, 1.0)
    mask = Image.fromarray((level * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0 * 0.6
    base = np.asarray(image, dtype=np.float32)
    dimmed = base * (0.55 + 0.45 * alpha / 0.6)  # darken where the unit is silent, so the hot part stands out
    out = dimmed * (1 - alpha) + HEAT_COLOUR * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))
