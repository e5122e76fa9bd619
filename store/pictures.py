"""Pictures from stored artefacts: decode, crop to a box, overlay an activation heatmap, encode.

Pure PIL and numpy, shared by precompute (thumbnails), the CLI (`unit --images`) and the dashboard.
"""

from __future__ import annotations

import io
import struct
import zlib

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


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, read from its header: the page lays a stored image out without
    decoding it. WebP (lossy, lossless, extended) and PNG are read here; anything else through PIL, which also
    reads only the header."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
        if chunk == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def heat_array(data: bytes | None, cells: int) -> np.ndarray | None:
    if not data or cells <= 0:
        return None
    return np.frombuffer(data, dtype=np.float16).astype(np.float32).reshape(cells, cells)


def overlay(image: Image.Image, heat: np.ndarray | None, vmax: float) -> Image.Image:
    """Spotlights where the unit fires: silent parts dimmed, the hottest part at full brightness, warm-tinted.

    The level runs from the window's own minimum (0) to `vmax` (1, the unit's top activation), so crops of
    one unit are comparable and a unit whose response never drops to zero still shows where it peaks.
    """
    level = heat_level(heat, vmax)
    if level is None:
        return image
    mask = Image.fromarray((level * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    base = np.asarray(image, dtype=np.float32)
    lit = base * (0.3 + 0.7 * alpha)
    out = lit * (1 - 0.25 * alpha) + HEAT_COLOUR * 0.25 * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def heat_level(heat: np.ndarray | None, vmax: float) -> np.ndarray | None:
    """The spotlight's level per heat cell, 0 to 1 (see `overlay`); None where there is nothing to show."""
    if heat is None:
        return None
    floor = float(heat.min())
    if vmax <= floor:
        return None
    return np.clip((heat - floor) / (vmax - floor), 0.0, 1.0)


def heat_layer(heat: np.ndarray | None, vmax: float) -> np.ndarray | None:
    """`overlay` as a translucent RGBA picture of one pixel per heat cell, to lay over the image and scale with
    it (the browser does both): composited over a pixel p it gives p * (1 - alpha) + colour * alpha, which is
    `overlay`'s p * (0.3 + 0.7 a) * (1 - 0.25 a) + HEAT_COLOUR * 0.25 a for alpha = 1 - (0.3 + 0.7 a)(1 - 0.25 a)
    and colour = HEAT_COLOUR * 0.25 a / alpha. Alpha is at least 0.25 for a in [0, 1]."""
    level = heat_level(heat, vmax)
    if level is None:
        return None
    a = level[..., None].astype(np.float32)
    alpha = 1.0 - (0.3 + 0.7 * a) * (1.0 - 0.25 * a)
    colour = HEAT_COLOUR * 0.25 * a / alpha
    rgba = np.concatenate([colour, alpha * 255.0], axis=-1)
    return rgba.round().clip(0, 255).astype(np.uint8)


def png_rgba(rgba: np.ndarray) -> bytes:
    """A height x width x 4 uint8 array as a PNG (8-bit RGBA, no filtering). Written here rather than by PIL,
    whose encoder setup costs ten times the work for the few dozen pixels of a heat layer."""
    height, width, _ = rgba.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgba.reshape(height, width * 4)], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8 bits, RGBA, deflate, no filter, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
            + chunk(b"IEND", b""))
