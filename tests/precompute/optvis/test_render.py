"""The render loop on tiny models built here (and the bundled model on two units): it raises the target,
batching does not change a unit's render, an oriented unit draws its orientation, seeds reproduce, errors."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from precompute.models import REGISTRY, Layer, ModelSpec, build
from precompute.optvis import objectives as O
from precompute.optvis import render as R
from precompute.optvis.prepare import prepare
from precompute.optvis.presets import PRESETS

pytestmark = pytest.mark.integration

FAST = dict(size=32, input_size=32, steps=30, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
# An input whose half-side windows (112 px) are wide enough to be used (presets.MIN_WINDOW_PX)
WIDE = {**FAST, "input_size": 224, "steps": 12}


def tiny() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
    )
    # Non-trivial statistics, so folding the BatchNorm into the conv is a real change to check.
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    model[1].weight.data.uniform_(0.5, 1.5)
    model[1].bias.data.uniform_(-0.2, 0.2)
    return model.eval().requires_grad_(False)


def grating(vertical: bool) -> nn.Module:
    """One unit that responds to stripes of period 4 px: vertical stripes (intensity varying along x) or horizontal."""
    yy, xx = torch.meshgrid(torch.arange(9.0) - 4, torch.arange(9.0) - 4, indexing="ij")
    along = xx if vertical else yy
    kernel = torch.cos(2 * math.pi * along / 4) * torch.exp(-(xx ** 2 + yy ** 2) / 18)
    conv = nn.Conv2d(3, 1, 9, padding=4, bias=False)
    conv.weight.data = (kernel - kernel.mean()).expand(1, 3, 9, 9).clone() / 3
    return nn.Sequential(conv, nn.ReLU()).eval().requires_grad_(False)


def orientation_ratio(image: np.ndarray) -> float:
    """Power at frequencies mostly along x over power at frequencies mostly along y (2-D FFT of the grey image)."""
    grey = image.astype(np.float64).mean(axis=-1)
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    fy = np.abs(np.fft.fftfreq(grey.shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(grey.shape[1]))[None, :]
    return float(power[fx > fy].sum() / max(power[fy > fx].sum(), 1e-12))


def test_rendering_raises_the_target_activation():
    model = tiny()
    objective = O.channels("3", [0, 1, 2])  # before the ReLU: a dead unit would have no gradient to follow
    _, before = R.render(model, objective, **{**FAST, "steps": 1})
    _, after = R.render(model, objective, **FAST)
    assert (after > before + 0.01).all(), (before, after)  # float noise is about 1e-6


def test_a_batch_renders_each_unit_as_rendering_it_alone():
    model = tiny()
    units = [0, 3, 5]
    images, scores = R.render(model, O.channels("4", units), keys=units, **FAST)
    for i, unit in enumerate(units):
        alone_image, alone = R.render(model, O.channel("4", unit), batch=1, keys=[unit], **FAST)
        assert alone[0] == pytest.approx(scores[i], rel=0.02)
        assert np.abs(alone_image[0].astype(int) - images[i].astype(int)).mean() < 2.0


@pytest.mark.parametrize("vertical", [True, False])
def test_an_oriented_unit_renders_its_orientation(vertical):
    model = grating(vertical)
    images, _ = R.render(model, O.channel("1", 0), batch=2, **{**FAST, "steps": 60})
    for image in images:
        ratio = orientation_ratio(image)  # about 1 for an image without a dominant orientation
        assert (ratio > 2) if vertical else (ratio < 1 / 2), ratio


def test_orientation_measure_reads_stripes_the_right_way():
    x = np.cos(2 * np.pi * np.arange(32) / 4)
    vertical_stripes = np.repeat(np.tile(x, (32, 1))[..., None], 3, axis=-1)
    assert orientation_ratio(vertical_stripes) > 100
    assert orientation_ratio(vertical_stripes.transpose(1, 0, 2)) < 0.01


def test_same_seed_same_images_other_seed_other_images():
    model = tiny()
    objective = O.channels("4", [1, 2])
    a, sa = R.render(model, objective, seed=3, **FAST)
    b, sb = R.render(model, objective, seed=3, **FAST)
    c, _ = R.render(model, objective, seed=4, **FAST)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert not np.array_equal(a, c)


def test_outputs_are_uint8_images_and_float_scores():
    images, scores = R.render(tiny(), O.channels("2", [0, 7]), **{**FAST, "size": 24, "steps": 2})
    assert images.shape == (2, 24, 24, 3) and images.dtype == np.uint8
    assert scores.shape == (2,) and scores.dtype == np.float32


def test_achieved_is_the_channel_mean_of_the_final_image():
    model = tiny()
    images, scores = R.render(model, O.channels("3", [0, 1]), **FAST)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        maps = model[:4](x)
    assert np.allclose(scores, [maps[0, 0].mean(), maps[1, 1].mean()], rtol=1e-3, atol=1e-4)


def test_the_callers_model_is_left_as_it_was():
    model = tiny().train()
    model[0].weight.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    R.render(model, O.channel("4", 0), batch=1, **{**FAST, "steps": 3})
    assert model.training and model[1].training
    assert model[0].weight.requires_grad and model[0].weight.grad is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_callers_hooks_stay_but_do_not_fire_while_rendering():
    model = tiny()
    calls = []
    # A hook that keeps a non-leaf output, as Lucent's do: such a model cannot be deep-copied as it is.
    handle = model[3].register_forward_hook(lambda _m, _i, out: calls.append(out * 1))
    model(torch.rand(1, 3, 32, 32, requires_grad=True))
    R.render(model, O.channel("3", 0), batch=1, **{**FAST, "steps": 3})
    assert len(calls) == 1
    model(torch.rand(1, 3, 32, 32))
    assert len(calls) == 2
    handle.remove()


def test_folding_batchnorms_keeps_every_requested_layer():
    model = tiny()
    folded = prepare(model, ["4"], "cpu", 32)
    assert isinstance(folded[1], nn.Identity)  # the BatchNorm went into conv 0
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-5)
    kept = prepare(model, ["0"], "cpu", 32)  # conv 0's own output is asked for: it must not change
    assert isinstance(kept[1], nn.BatchNorm2d)


def test_step_callback_sees_every_step():
    seen = []
    R.render(tiny(), O.channel("4", 0), batch=1, step_callback=lambda step, s: seen.append((step, s.shape)),
             **{**FAST, "steps": 4})
    assert seen == [(i, (1,)) for i in range(4)]


def test_other_objectives_and_parameterisations_render():
    model = tiny()
    photo = (np.random.default_rng(0).random((1, 32, 32, 3)) * 255).astype(np.uint8)
    target = R.activations(model, ["3"], photo, input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)["3"][0]
    for objective, batch in [(O.neuron("3", 1), 1), (O.negative("3", 2), 1), (O.deepdream("2"), 1),
                             (O.direction("3", torch.ones(6)), 1), (O.caricature("3", target), 1),
                             (O.channel("3", 0) + 0.5 * O.diversity("2"), 3)]:
        _, before = R.render(model, objective, batch=batch, param="pixel", **{**FAST, "steps": 1})
        _, after = R.render(model, objective, batch=batch, param="pixel", **{**FAST, "steps": 25})
        assert after.sum() > before.sum(), objective.name


def test_out_of_memory_halves_the_batch_and_keeps_element_order(monkeypatch):
    real = R._optimise
    sizes = []

    def small_memory(model, objective, layers, keys, settings, callback):
        sizes.append(len(keys))
        if len(keys) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, objective, layers, keys, settings, callback)

    model = tiny()
    units = [0, 1, 2, 3, 4]
    monkeypatch.setattr(R, "_optimise", small_memory)
    images, scores = R.render(model, O.channels("4", units), keys=units, **{**FAST, "steps": 5})
    monkeypatch.setattr(R, "_optimise", real)
    whole, whole_scores = R.render(model, O.channels("4", units), keys=units, **{**FAST, "steps": 5})
    assert sizes == [5, 3, 2, 1, 2]
    assert np.allclose(scores, whole_scores, rtol=1e-3)
    assert np.abs(images.astype(int) - whole.astype(int)).mean() < 1.0


def test_out_of_memory_at_batch_one_is_a_clear_error(monkeypatch):
    def no_memory(*_args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(R, "_optimise", no_memory)
    with pytest.raises(R.RenderError, match="out of GPU memory rendering 1 image"):
        R.render(tiny(), O.channels("4", [0, 1]), **FAST)
    with pytest.raises(R.RenderError, match="couples 2 elements"):
        R.render(tiny(), O.channels("4", [0, 1]) + O.diversity("4"), **FAST)


@pytest.mark.parametrize("call,message", [
    (lambda m: R.render(m, O.channel("nope", 0), batch=1, **FAST), "no layer 'nope'"),
    (lambda m: R.render(m, O.channel("4", 6), batch=1, **FAST), "unit 6 is out of range"),
    (lambda m: R.render(m, O.channel("4", 0), batch=1, **{**FAST, "steps": 0}), "steps must be a positive"),
    (lambda m: R.render(m, O.channel("4", 0), batch=0, **FAST), "batch must be a positive"),
    (lambda m: R.render(m, O.channels("4", [0, 1]), batch=3, **FAST), "describes 2 batch elements"),
    (lambda m: R.render(m, O.channel("4", 0), param="cppn", **FAST), "unknown parameterisation"),
    (lambda m: R.render(m, O.channel("4", 0), transforms="fancy", **FAST), "unknown transform set"),
    (lambda m: R.render(m, O.channel("4", 0), seed=-1, **FAST), "seed must be"),
    (lambda m: R.render(m, "4:0", **FAST), "objective must be an Objective"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(R.RenderError, match=message):
        call(tiny())


def tiny_spec() -> ModelSpec:
    return ModelSpec(id="tiny", arch="tiny", source="factory", input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                     layers=(Layer("2", 8, alias="early"), Layer("4", 6)))


def test_render_units_chunks_without_changing_any_unit():
    model, spec = tiny(), tiny_spec()
    settings = dict(size=32, steps=20)
    images, scores = R.render_units(model, spec, "4", [5, 0, 3], batch=3, **settings)
    chunked, chunked_scores = R.render_units(model, spec, "4", [5, 0, 3], batch=2, **settings)
    assert images.shape == (3, 32, 32, 3)
    assert np.allclose(scores, chunked_scores, rtol=0.02)
    assert np.abs(images.astype(int) - chunked.astype(int)).mean() < 2.0
    by_alias, _ = R.render_units(model, spec, "early", [1], **settings)
    assert by_alias.shape == (1, 32, 32, 3)


def test_render_units_errors():
    model, spec = tiny(), tiny_spec()
    with pytest.raises(R.RenderError, match="unknown layer"):
        R.render_units(model, spec, "9", [0])
    with pytest.raises(R.RenderError, match="out of range .* 6 units"):
        R.render_units(model, spec, "4", [0, 6])
    with pytest.raises(R.RenderError, match="unknown preset"):
        R.render_units(model, spec, "4", [0], preset="slow")
    with pytest.raises(R.RenderError, match="unknown render setting 'stepz'"):
        R.render_units(model, spec, "4", [0], stepz=3)
    with pytest.raises(R.RenderError, match="unknown objective"):
        R.render_units(model, spec, "4", [0], objective="caricature")


def test_presets_are_data():
    quick, full = PRESETS["quick"], PRESETS["full"]
    assert (quick.size, quick.steps, quick.window) == (128, 256, 0.5)
    assert (full.size, full.steps, full.window) == (224, 2048, None)


def input_sides(model: nn.Module) -> list[int]:
    """Records the side of every input the model is given (a hook on the first layer; render with
    optimise_model=False, as the optimised copy leaves the caller's hooks behind)."""
    sides: list[int] = []
    model[0].register_forward_pre_hook(lambda _m, args: sides.append(args[0].shape[-1]))
    return sides


def test_a_window_shows_pooled_objectives_part_of_the_view_and_scores_the_whole():
    model = tiny()
    sides = input_sides(model)
    objective = O.channels("3", [0, 1, 2])
    _, before = R.render(model, objective, **{**WIDE, "steps": 1})
    sides.clear()
    images, after = R.render(model, objective, window=0.5, optimise_model=False, **WIDE)
    # A probe that the model runs on a window, the steps' 112 px windows of the 224 px view, then the score
    # measured on the whole view.
    assert sides == [112] + [112] * WIDE["steps"] + [224]
    assert np.allclose(after, R.achieved(model, objective, images, input_size=224, mean=FAST["mean"],
                                         std=FAST["std"]), atol=1e-5)
    sides.clear()
    R.render(model, objective, window=0.5, optimise_model=False, **{**FAST, "steps": 2})
    assert sides == [32] * 3  # a 16 px window is under presets.MIN_WINDOW_PX: the whole 32 px view
    assert (after > before + 1e-3).all(), (before, after)  # 12 steps: float noise is about 1e-6


class OwnSizeOnly(nn.Sequential):
    """A model that, like a ViT, refuses any input but its own size."""

    def forward(self, x):
        assert x.shape[-1] == 224, f"Input height ({x.shape[-1]}) doesn't match model (224)."
        return super().forward(x)


def test_a_model_that_takes_only_its_own_input_size_renders_without_windows():
    model = OwnSizeOnly(*tiny()).eval()
    sides = input_sides(model)
    objective = O.channels("3", [0, 1])
    _, before = R.render(model, objective, **{**WIDE, "steps": 1})
    sides.clear()
    images, after = R.render(model, objective, window=0.5, optimise_model=False, **WIDE)
    assert set(sides) == {224}  # the probe at the window's side stopped at the model's check; the steps saw it all
    assert (after > before + 1e-3).all(), (before, after)  # 12 steps: float noise is about 1e-6
    assert R.usable_window(tiny(), ["3"], 0.5, 224, torch.device("cpu")) == 0.5  # a convnet keeps its windows
    spec = ModelSpec(id="own", arch="own", source="factory", input_size=224, mean=FAST["mean"], std=FAST["std"],
                     layers=(Layer("3", 6),))
    images, scores = R.render_units(model, spec, "3", [0, 1], size=32, steps=3, window=0.5)
    assert images.shape == (2, 32, 32, 3) and np.isfinite(scores).all()


def test_position_bound_objectives_ignore_the_window():
    model = tiny()
    sides = input_sides(model)
    R.render(model, O.neurons("3", [0, 1]), window=0.5, optimise_model=False, **{**FAST, "steps": 3})
    assert set(sides) == {32}
    with_window, _ = R.render(model, O.neurons("3", [0, 1]), window=0.5, **{**FAST, "steps": 3})
    without, _ = R.render(model, O.neurons("3", [0, 1]), **{**FAST, "steps": 3})
    assert np.array_equal(with_window, without)


@pytest.mark.parametrize("window", [0, 1.5, -0.5, True, "half"])
def test_bad_windows_are_one_clear_error(window):
    with pytest.raises(R.RenderError, match="window must be a fraction"):
        R.render(tiny(), O.channel("4", 0), batch=1, window=window, **FAST)
    with pytest.raises(R.RenderError, match="window must be a fraction"):
        R.render_units(tiny(), tiny_spec(), "4", [0], window=window)


def test_bundled_model_two_units_rise_and_folding_is_exact():
    spec = REGISTRY["efficientnet_lite0.bundled"]
    model = build(spec)
    images, scores = R.render_units(model, spec, "blocks.1", [0, 5], size=64, steps=6)
    _, start = R.render_units(model, spec, "blocks.1", [0, 5], size=64, steps=1)
    assert images.shape == (2, 64, 64, 3)
    assert (scores > start).all(), (start, scores)
    # The score is measured on the folded copy; the original model must agree.
    original = R.achieved(model, O.channels("blocks.1", [0, 5]), images, input_size=224, mean=spec.mean,
                          std=spec.std)
    assert np.allclose(original, scores, rtol=1e-3, atol=1e-3)


def test_copies_render_each_unit_from_other_seeds_in_the_same_batch():
    model = tiny()
    spec = ModelSpec(id="tiny", arch="tiny", source="factory", input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                     layers=(Layer("4", 6),))
    knobs = dict(size=32, steps=20, batch=4)
    one, one_scores = R.render_units(model, spec, "4", [1, 2], **knobs)
    two, two_scores = R.render_units(model, spec, "4", [1, 2], copies=2, **knobs)
    assert two.shape == (2, 2, 32, 32, 3) and two_scores.shape == (2, 2)
    assert np.abs(two[0].astype(int) - one.astype(int)).mean() < 1.0  # copy 0 is the single render
    assert np.allclose(two_scores[0], one_scores, rtol=1e-3)
    assert np.abs(two[1].astype(int) - two[0].astype(int)).mean() > 5  # copy 1 starts elsewhere
    with pytest.raises(R.RenderError, match="copies must be a positive integer"):
        R.render_units(model, spec, "4", [1], copies=0)
