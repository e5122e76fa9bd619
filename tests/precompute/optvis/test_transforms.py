"""Transforms: each on its own (exact where the geometry allows), seeding, differentiability, fused composition."""

import pytest
import torch

from precompute.optvis import rng
from precompute.optvis import transforms as tf


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(batch=2, size=16, seed=0):
    return torch.rand(batch, 3, size, size, generator=gen(seed))


def test_pad_copies_the_image_and_fills_the_border_with_grey():
    x = images()
    out = tf.pad(3)(x, gen())
    assert out.shape == (2, 3, 22, 22)
    assert torch.allclose(out[..., 3:-3, 3:-3], x, atol=1e-5)
    border = torch.ones(22, 22, dtype=torch.bool)
    border[3:-3, 3:-3] = False
    assert torch.allclose(out[..., border], torch.tensor(tf.FILL), atol=1e-6)


def test_jitter_shifts_each_element_by_whole_pixels_within_range():
    x = images(batch=8, size=20)
    out = tf.jitter(5)(x, rng.element_generators(0, range(8)))
    shifts = set()
    for i in range(8):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.allclose(out[i, :, 2:-2, 2:-2], x[i, :, 2 - dy:18 - dy, 2 - dx:18 - dx], atol=1e-5)]
        assert len(found) == 1, f"element {i} is not a whole-pixel shift of at most 2"
        shifts.add(found[0])
    assert len(shifts) > 1  # elements draw their own shifts


def test_rotating_by_90_degrees_is_exact_and_counter_clockwise():
    x = images(size=15)
    out = tf.random_rotate([90])(x, gen())
    assert torch.allclose(out, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)


def test_scale_above_one_magnifies_about_the_centre():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0
    out = tf.random_scale([2.0])(x, gen())  # zooming in samples inside the image only: no grey fill
    bright = (out > 0.5).float()
    assert float(bright.sum()) == pytest.approx(4 * 64, rel=0.15)
    ys, xs = torch.nonzero(bright[0, 0], as_tuple=True)
    assert float(ys.float().mean()) == pytest.approx(15.5, abs=0.5)
    assert float(xs.float().mean()) == pytest.approx(15.5, abs=0.5)


def test_resize_changes_only_the_size():
    x = torch.full((1, 3, 8, 8), 0.3)
    out = tf.resize(20)(x, gen())
    assert out.shape == (1, 3, 20, 20)
    assert torch.allclose(out, torch.tensor(0.3), atol=1e-6)


def test_window_cuts_a_whole_pixel_window_that_fits_at_a_random_place():
    x = images(batch=12, size=16)
    out = tf.window(6)(x, rng.element_generators(0, range(12)))
    assert out.shape == (12, 3, 6, 6)
    corners = set()
    for i in range(12):
        found = [(y, x0) for y in range(11) for x0 in range(11)
                 if torch.allclose(out[i], x[i, :, y:y + 6, x0:x0 + 6], atol=1e-5)]
        assert len(found) == 1, f"element {i} is not a 6x6 window of its image"
        corners.add(found[0])
    assert len(corners) > 6  # each element draws its own place
    assert torch.allclose(tf.window(16)(x, gen()), x, atol=1e-5)  # a window the image's size is the image


def test_fused_composition_equals_applying_one_by_one():
    x = images(size=12)
    steps = [tf.pad(2), tf.random_rotate([90]), tf.jitter(3)]
    fused = tf.compose(steps)(x, gen(5))
    g = gen(5)
    one_by_one = x
    for t in steps:
        one_by_one = t(one_by_one, g)
    assert fused.shape == (2, 3, 16, 16)
    assert torch.allclose(fused, one_by_one, atol=1e-5)


def test_non_warp_transforms_run_between_warps():
    x = images(size=8)
    flip = lambda t, _g: torch.flip(t, dims=(-1,))  # noqa: E731
    out = tf.compose([tf.pad(1), flip, tf.pad(1)])(x, gen())
    assert out.shape == (2, 3, 12, 12)
    assert torch.allclose(out[..., 2:-2, 2:-2], torch.flip(x, dims=(-1,)), atol=1e-5)


def test_standard_transforms_are_seeded_and_differentiable():
    x = images(batch=4, size=32).requires_grad_(True)
    standard = tf.compose([*tf.STANDARD, tf.resize(48)])
    a = standard(x, rng.element_generators(1, range(4)))
    b = standard(x, rng.element_generators(1, range(4)))
    c = standard(x, rng.element_generators(2, range(4)))
    assert a.shape == (4, 3, 48, 48)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    a.sum().backward()
    assert float(x.grad.abs().sum()) > 0


def test_empty_composition_is_the_identity():
    x = images()
    assert tf.compose([])(x, gen()) is x


@pytest.mark.parametrize("make", [lambda: tf.pad(-1), lambda: tf.jitter(0), lambda: tf.random_scale([]),
                                  lambda: tf.random_scale([0.0]), lambda: tf.random_rotate([]), lambda: tf.window(0)])
def test_bad_settings_are_refused(make):
    with pytest.raises(ValueError):
        make()
