import io

import numpy as np
from PIL import Image

from store import pictures


def test_encode_decode_roundtrip_and_crop():
    image = Image.new("RGB", (64, 64), (200, 100, 50))
    back = pictures.decode(pictures.encode(image))
    assert back.size == (64, 64)
    assert np.abs(np.asarray(back, dtype=int) - [200, 100, 50]).max() < 8
    assert pictures.crop(back, (8, 8, 24, 24), size=48).size == (48, 48)


def test_overlay_keeps_hot_region_bright_and_dims_the_rest():
    image = Image.new("RGB", (40, 40), (200, 200, 200))
    heat = np.zeros((4, 4), dtype=np.float16)
    heat[0, 0] = 10.0
    out = np.asarray(pictures.overlay(image, heat.astype(np.float32), vmax=10.0), dtype=float)
    assert out[2, 2].mean() > 150 and out[-2, -2].mean() < 80
    assert pictures.overlay(image, None, 1.0) is image


def test_heat_array_roundtrip():
    heat = np.arange(9, dtype=np.float16).reshape(3, 3)
    assert (pictures.heat_array(heat.tobytes(), 3) == heat).all()
    assert pictures.heat_array(None, 0) is None


def test_image_size_reads_the_header_of_each_stored_format():
    image = Image.fromarray((np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8))
    for fmt, options in (("WEBP", {}), ("WEBP", {"lossless": True}), ("PNG", {}), ("JPEG", {})):
        buf = io.BytesIO()
        image.save(buf, format=fmt, **options)
        assert pictures.image_size(buf.getvalue()) == (53, 37), (fmt, options)
    translucent = image.convert("RGBA")
    translucent.putalpha(128)
    buf = io.BytesIO()
    translucent.save(buf, format="WEBP")  # lossy with alpha: the extended (VP8X) layout
    assert buf.getvalue()[12:16] == b"VP8X" and pictures.image_size(buf.getvalue()) == (53, 37)


def test_heat_layer_composited_over_the_image_is_the_overlay():
    """The browser lays the heat layer over the crop (source-over); at one pixel per cell that is `overlay`."""
    rng = np.random.default_rng(1)
    base = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    heat = rng.random((6, 6)).astype(np.float32) * 4
    rgba = pictures.heat_layer(heat, vmax=3.0)
    alpha = rgba[..., 3:] / 255.0
    composited = base * (1 - alpha) + rgba[..., :3] * alpha
    expected = np.asarray(pictures.overlay(Image.fromarray(base), heat, vmax=3.0), dtype=float)
    assert np.abs(composited - expected).max() <= 2.5
    assert pictures.heat_layer(heat, vmax=float(heat.min())) is None and pictures.heat_layer(None, 1.0) is None


def test_png_rgba_decodes_to_the_same_pixels():
    rgba = (np.random.default_rng(2).random((5, 7, 4)) * 255).astype(np.uint8)
    with Image.open(io.BytesIO(pictures.png_rgba(rgba))) as back:
        assert back.mode == "RGBA" and (np.asarray(back) == rgba).all()
