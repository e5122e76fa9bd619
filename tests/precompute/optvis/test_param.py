"""Image parameterisations: shapes, range, seeding, per-element independence, 1/f spectrum, colour basis."""

import numpy as np
import pytest
import torch

from precompute.optvis import param, rng


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("make", [param.fourier, param.pixels])
@pytest.mark.parametrize("size", [16, (12, 17)])
def test_images_have_the_asked_shape_and_lie_in_0_1(make, size):
    params, image = make(3, size, gen())
    x = image().detach()
    h, w = (size, size) if isinstance(size, int) else size
    assert x.shape == (3, 3, h, w)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert all(p.is_leaf and p.requires_grad for p in params)


@pytest.mark.parametrize("make", [param.fourier, param.pixels])
def test_gradients_reach_the_parameters(make):
    params, image = make(2, 16, gen())
    image()[:, 0].mean().backward()
    assert float(params[0].grad.abs().sum()) > 0


@pytest.mark.parametrize("make", [param.fourier, param.pixels])
def test_same_seed_same_image_other_seed_other_image(make):
    a = make(2, 16, gen(1))[1]()
    b = make(2, 16, gen(1))[1]()
    c = make(2, 16, gen(2))[1]()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_per_element_generators_make_an_element_independent_of_its_batch():
    keys = [7, 3, 11]
    batch = param.fourier(3, 16, rng.element_generators(0, keys))[1]()
    alone = param.fourier(1, 16, rng.element_generators(0, [3]))[1]()
    assert torch.equal(batch[1], alone[0])
    assert not torch.allclose(batch[0], batch[1])


def test_spectrum_scale_falls_as_one_over_frequency_and_is_floored():
    scale = param.spectrum_scale(64, 64)
    freqs = param.rfft2d_freqs(64, 64)
    assert scale[0, 0] == pytest.approx(64)  # DC gets the lowest frequency's weight, not infinity
    assert scale[0, 1] == pytest.approx(64)  # f = 1/64
    assert scale[0, 32] == pytest.approx(2)  # f = 1/2
    mid = (freqs > 0.05) & (freqs < 0.45)
    assert np.allclose(scale[mid] * freqs[mid], 1.0)


def test_fourier_images_have_most_power_at_low_frequencies():
    # In logit space (before the sigmoid), without colour mixing, power should fall like 1/f^2.
    params, _ = param.fourier(8, 64, gen(), decorrelate=False)
    with torch.no_grad():
        spectrum = torch.view_as_complex(params[0]) * torch.as_tensor(param.spectrum_scale(64, 64), dtype=torch.float32)
        logits = torch.fft.irfft2(spectrum, s=(64, 64), norm="ortho")
    power = np.abs(np.fft.rfft2(logits.numpy())) ** 2
    freqs = param.rfft2d_freqs(64, 64)
    low = power[..., (freqs > 0) & (freqs < 0.1)].mean()
    high = power[..., freqs > 0.35].mean()
    assert low > 20 * high


def test_colour_basis_first_axis_is_luminance_second_is_opponent():
    assert np.max(np.linalg.norm(param.COLOR_CORRELATION, axis=0)) == pytest.approx(1.0)
    basis = torch.eye(3).reshape(3, 3, 1, 1)
    rgb = param.decorrelated_to_rgb(basis)[..., 0, 0]
    luminance, opponent = rgb[0], rgb[1]
    assert float(luminance.min()) > 0 and float(luminance.max() - luminance.min()) < 0.05 * float(luminance.max())
    assert float(opponent[0]) > 0 > float(opponent[2])  # red against blue
    assert abs(float(opponent[1])) < 1e-6


def test_decorrelation_changes_the_image():
    t = torch.randn(1, 3, 4, 4)
    assert not torch.allclose(param.to_valid_rgb(t, True), param.to_valid_rgb(t, False))
    assert torch.allclose(param.to_valid_rgb(t, False), torch.sigmoid(t))


@pytest.mark.parametrize("batch,size", [(0, 16), (2, 0), (-1, 8)])
def test_bad_sizes_are_refused(batch, size):
    with pytest.raises(ValueError):
        param.fourier(batch, size, gen())


def test_wrong_number_of_generators_is_refused():
    with pytest.raises(ValueError, match="generators"):
        param.pixels(3, 8, rng.element_generators(0, [1, 2]))
