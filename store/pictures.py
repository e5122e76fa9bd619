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
    """Spotlights where the unit fires: silent parts dimmed, the hottest part at full brightness, warm-tinted.

    The level runs from the window's own minimum (0) to `vmax` (1, the unit's top activation), so crops of
    one unit are comparable and a unit whose response never drops to zero still shows where it peaks.
    """
    if heat is None:
        return image
    floor = float(heat.min())
    if vmax <= floor:
        return image
    level = np.clip((heat - floor) / (vmax - floor), 0.0, 1.0)
    mask = Image.fromarray((level * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    base = np.asarray(image, dtype=np.float32)
    lit = base * (0.3 + 0.7 * alpha)
    out = lit * (1 - 0.25 * alpha) + HEAT_COLOUR * 0.25 * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))
