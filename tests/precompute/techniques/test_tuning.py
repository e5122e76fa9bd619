"""Tuning curves on hand-built units whose answers are known, and the technique through the real pipeline."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from precompute.techniques import tuning
from store.stimuli import FAMILIES, hsv_to_rgb

pytestmark = pytest.mark.integration  # runs hand-built units and the pipeline on a tiny model

SIZE = 64
ORIENTATION = 60.0  # of the oriented unit's preferred stripes
HUE = 240.0  # of the colour-opponent (blue minus yellow) unit


def gabor(orientation: float, period: float, side: int = 15, sigma: float = 3.5) -> torch.Tensor:
    """An even Gabor (cosine) kernel whose stripes run along `orientation`, y up as in store.stimuli."""
    c = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    x, y = c[None, :], -c[:, None]
    normal = np.deg2rad(orientation + 90)
    wave = torch.cos(2 * np.pi / period * (x * np.cos(normal) + y * np.sin(normal)))
    kernel = wave * torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    return (kernel - kernel.mean()).float()


def hand_built() -> nn.Module:
    """Unit 0: oriented (Gabor at 60°, period 8 px, on a large positive bias, as a linear conv layer's units
    often are); unit 1: colour-opponent (blue minus yellow); unit 2: untuned (an isotropic blur of luminance)."""
    conv = nn.Conv2d(3, 3, 15, padding=7)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
        conv.weight[0] = gabor(ORIENTATION, 8.0)[None].expand(3, -1, -1) / 3
        rgb = torch.tensor(hsv_to_rgb(HUE, 1.0, 1.0), dtype=torch.float32)
        conv.weight[1, :, 7, 7] = rgb - rgb.mean()
        c = torch.arange(15.0) - 7
        blur = torch.exp(-(c[None, :] ** 2 + c[:, None] ** 2) / (2 * 2.0 ** 2))
        conv.weight[2] = (blur / blur.sum())[None].expand(3, -1, -1) / 3
    return nn.Sequential(conv).eval()


@pytest.fixture(scope="module")
def summaries():
    record = tuning.responses(hand_built(), ["0"], SIZE, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))["0"]
    out = {}
    for name, family in FAMILIES.items():
        grid = record[name][0].T.reshape(3, *family.shape(SIZE))
        out[name] = (family.axes(SIZE), tuning.summarise(family.axes(SIZE), grid, record["blank"][0][0]))
    return out


def circular_gap(a: float, b: float, period: float) -> float:
    d = abs(a - b) % period
    return min(d, period - d)


def test_oriented_unit_prefers_its_orientation(summaries):
    axes, s = summaries["gratings"]
    step = 180 / len(axes[0].values)
    assert circular_gap(s["preferred"][0, 0], ORIENTATION, 180) <= step
    assert s["preferred"][0, 1] == 8.0  # cycles per 64 px image: the kernel's 8 px period
    assert s["selectivity"][0, 0] > 0.5


def test_colour_opponent_unit_prefers_its_hue(summaries):
    axes, s = summaries["colour"]
    assert circular_gap(s["preferred"][1, 0], HUE, 360) <= 360 / len(axes[0].values)
    assert s["preferred"][1, 1] == 1.0  # most saturated
    assert s["selectivity"][1, 0] > 0.5


def test_untuned_unit_has_low_orientation_selectivity(summaries):
    for family in ("gratings", "lines"):
        _, s = summaries[family]
        assert s["selectivity"][2, 0] < 0.1, family
        assert s["selectivity"][0, 0] > 3 * s["selectivity"][2, 0]


def test_selectivity_is_measured_above_the_blank_response(summaries):
    axes, s = summaries["gratings"]
    record = tuning.responses(hand_built(), ["0"], SIZE, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))["0"]
    grid = record["gratings"][0].T.reshape(3, *FAMILIES["gratings"].shape(SIZE))
    raw = tuning.summarise(axes, grid)  # no baseline: the bias of 20 looks like a response to every orientation
    assert raw["selectivity"][0, 0] < 0.5 < s["selectivity"][0, 0]
    assert record["blank"][0][0, 0] == pytest.approx(20.0, abs=0.01)


def test_selectivity_uses_doubled_angles_for_orientation():
    values = np.arange(0, 180, 15.0)
    # Equal responses at 0° and 90° are opposite orientations: no preferred orientation.
    curve = np.where(np.isin(values, (0, 90)), 1.0, 0.0)[None]
    assert tuning.selectivity(curve, values, 180)[0] == pytest.approx(0.0, abs=1e-9)
    # At 0° and 165° they are neighbours (15° apart), so the unit is quite selective.
    curve = np.where(np.isin(values, (0, 165)), 1.0, 0.0)[None]
    assert tuning.selectivity(curve, values, 180)[0] > 0.8


def test_half_max_width():
    values = np.arange(0, 360, 15.0)
    curve = np.zeros(24)
    curve[[23, 0, 1]] = [0.5, 1.0, 0.5]  # peak at 0°, wraps round; half max reached exactly at ±15°
    assert tuning.half_max_width(curve, values, 360) == pytest.approx(30.0)
    assert tuning.half_max_width(np.ones(24), values, 360) is None  # flat: no width
    assert tuning.half_max_width(np.array([0.0, 1.0, 1.0, 0.0]), [1, 2, 4, 8], None) == pytest.approx(4.5)


def test_precompute_tuning_into_the_store(tmp_path):
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request
    from store.queries import Store

    factory = tmp_path / "hand.py"
    factory.write_text(
        "import sys\nsys.path.insert(0, %r)\nfrom test_tuning import hand_built as build\n" % str(
            __import__("pathlib").Path(__file__).parent))
    store_path = tmp_path / "s.duckdb"
    summary = precompute(Request(model=f"{factory}:build", store=store_path, max_images=8, progress=False,
                                 techniques="stats,tuning",
                                 overrides=Overrides(name="hand", input_size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3)))
    assert summary["store"]["tuning"] == 3 * len(FAMILIES)
    store = Store(store_path)
    record = store.unit_record("hand", "0", 0)["tuning"]
    assert set(record) == set(FAMILIES)
    gratings = record["gratings"]
    assert circular_gap(gratings["preferred"]["orientation"], ORIENTATION, 180) <= 15
    assert gratings["axes"]["orientation"]["unit"] == "deg"
    assert len(gratings["response"]) == int(np.prod(gratings["shape"]))
    assert gratings["best_relative_to_dataset_max"] == pytest.approx(
        gratings["best"] / store.unit_stats("hand", "0", 0)["max"])
    json.dumps(record)  # JSON-ready: no NaN objects, no numpy types
    found = store.find_tuned("hand", "colour", "hue", 220, 260, min_selectivity=0.5)
    assert [(r["layer"], r["unit"]) for r in found] == [("0", 1)]
    wraps = store.find_tuned("hand", "gratings", "orientation", 170, 70, min_selectivity=0.5)
    assert [r["unit"] for r in wraps] == [0]
    assert store.find_tuned("hand", "gratings", "orientation", 90, 150, min_selectivity=0.5) == []
    strong = store.find_tuned("hand", "gratings", "orientation", 170, 70, 0.5, min_relative=1.5 * wraps[0]["relative"])
    assert strong == [] and wraps[0]["relative"] > 0
    wide = store.layer_tuning("hand", "0")
    assert list(wide["unit"]) == [0, 1, 2] and wide["gratings_orientation_sel"].iloc[0] > 0.5
