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
