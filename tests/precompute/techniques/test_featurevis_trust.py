"""The trust signals of issue 15 (store/trust.py, precompute/paths.py): on paths whose answer is known by
construction, and through the pipeline on a layer with a natural and an unnatural path to one unit.

The network's first layer reads two kinds of feature. Natural ones: brightness and colour fields, which photos
are full of. Unnatural ones: checkerboards of 4-pixel cells in opposite colours, which the bundled photos
(smooth, downsampled crops) hardly contain but the renderer can draw. The second layer's unit 0 reads
brightness plus ten times the red-green checkerboard; units 1-3 read only natural features. Unit 0's top
photos light it through brightness; its picture lights it through the checkerboard, and is marked. Tested over
seeds 0-3 at 64 steps (measured: unit 0's natural path 0.41-0.58 against its floor of 0.68; units 1-3 at 1.00,
whatever the renderer leaves in the checkerboard channels, which they do not read).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from precompute import paths
from precompute.cli import main
from precompute.models import Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from store import trust
from store.queries import Store
from tests.app_support import APP

pytestmark = pytest.mark.integration

FACTORY = '''
import torch
from torch import nn


def build():
    k = 8
    flat = torch.ones(k, k) / (k * k)
    checker = torch.tensor([[(-1.0) ** (y // 4 + x // 4) for x in range(k)] for y in range(k)]) / (k * k)

    def colour(r, g, b, pattern):
        return torch.stack([r * pattern, g * pattern, b * pattern])

    kernels = [colour(1, 1, 1, flat), colour(1, 0, 0, flat), colour(0, 1, 0, flat), colour(0, 0, 1, flat),
               colour(1, 1, 0, flat), colour(1, -1, 0, checker), colour(-1, 1, 0, checker), colour(1, 1, 1, checker)]
    seen = nn.Conv2d(3, len(kernels), k, padding=k // 2)
    seen.weight.data = torch.stack(kernels)
    seen.bias.data = torch.zeros(len(kernels))
    read = nn.Conv2d(len(kernels), 4, 1)
    w = torch.zeros(4, len(kernels))
    w[0, 0], w[0, 5] = 1.0, 10.0  # brightness, and ten times the red-green checkerboard
    w[1, 0], w[1, 1] = 1.0, 1.0  # brightness and red
    w[2, 1] = 1.0  # red
    w[3, 2] = 1.0  # green
    read.weight.data = w[:, :, None, None]
    read.bias.data = torch.zeros(4)
    return nn.Sequential(nn.Sequential(seen, nn.ReLU()), nn.Sequential(read, nn.ReLU()), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())
'''


def build_store(folder: Path, seed: int) -> Path:
    (folder / "paths.py").write_text(FACTORY)
    store = folder / "s.duckdb"
    precompute(Request(model=f"{folder / 'paths.py'}:build", store=store, layers="1", units="0-3", seed=seed,
                       techniques="stats,dataset,featurevis", max_images=64, k=8, progress=False,
                       options={"size": 64, "steps": 64, "gallery": True},
                       overrides=Overrides(name="paths", input_size=64)))
    return store


@pytest.fixture(scope="module")
def trust_store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("trust"), seed=0)


def test_a_picture_that_takes_another_path_than_the_top_examples_is_marked(trust_store):
    assert_marked_as_planted(trust_store)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_marking_holds_for_other_seeds(tmp_path, seed):
    assert_marked_as_planted(build_store(tmp_path, seed))


def assert_marked_as_planted(path: Path) -> None:
    store = Store(path)
    marked = store.featurevis_trust("paths", "1", 0)
    assert marked["unnatural_path"] is True, marked
    assert marked["natural_path"] < marked["natural_floor"] - 0.05
    assert marked["ratio_to_top"] > 1  # the other path is the stronger one: the picture beats every photo
    for unit in (1, 2, 3):
        kept = store.featurevis_trust("paths", "1", unit)
        assert kept["unnatural_path"] is False and kept["natural_path"] > 0.99, (unit, kept)


def test_a_path_adds_up_to_the_activation_and_counts_only_what_the_unit_reads():
    """Gradient times input through a linear read-out and a ReLU is exact: the shares add up to the unit's
    activation at the cell, and an input channel the unit has no weight on has no share."""
    torch.manual_seed(0)
    read = nn.Conv2d(4, 2, 1, bias=False)
    read.weight.data[1, 3] = 0.0
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), nn.Sequential(read, nn.ReLU()))
    x = torch.randn(3, 3, 16, 16)
    pairs = [(0, 0, None), (1, 1, None), (0, 1, (2, 3)), (2, 0, None)]
    shares = paths.contributions(model, lambda i: x[i], {"1": pairs})["1"]
    with torch.no_grad():
        out = model(x)
    for (image, unit, cell), share in zip(pairs, shares):
        value = out[image, unit].max() if cell is None else out[image, unit, cell[0], cell[1]]
        assert share.sum() == pytest.approx(float(value), abs=1e-5)
        if unit == 1:
            assert share[3] == 0


def test_the_paths_of_several_layers_come_from_one_forward_per_image():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                          nn.Sequential(nn.Conv2d(4, 3, 3, padding=1), nn.ReLU()), nn.Conv2d(3, 2, 1))
    forwards = []
    model[0].register_forward_hook(lambda _m, args, _out: forwards.append(len(args[0])))
    x = torch.randn(5, 3, 12, 12)
    pairs = {"1": [(0, 0, None), (3, 2, None)], "2": [(0, 1, (4, 4)), (4, 0, None), (1, 1, None)]}
    together = paths.contributions(model, lambda i: x[i], pairs, batch=8)
    assert forwards == [4]  # images 0, 1, 3 and 4, each once, for both layers
    for layer, wanted in pairs.items():
        alone = paths.contributions(model, lambda i: x[i], {layer: wanted})[layer]
        assert np.allclose(together[layer], alone, atol=1e-6)


def test_a_module_that_cannot_run_on_its_input_alone_has_no_path():
    class Pair(nn.Module):
        def forward(self, x, scale):
            return x * scale

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pair = nn.Conv2d(3, 2, 1), Pair()

        def forward(self, x):
            return self.pair(self.conv(x), 2.0)

    assert paths.contributions(Net(), lambda i: torch.zeros(3, 4, 4), {"pair": [(0, 0, None)]}) == {"pair": None}


@pytest.mark.app
def test_the_lens_warns_of_the_other_path_and_only_there(trust_store, monkeypatch):
    monkeypatch.setenv("MICROSCOPE_STORE", str(trust_store))
    for unit, warned in (("0", True), ("1", False)):
        at = AppTest.from_file(APP, default_timeout=60)
        at.switch_page("app_pages/unit.py")
        for k, v in {"model": "paths", "layer": "1", "unit": unit, "view": "featurevis"}.items():
            at.query_params[k] = v
        at.run()
        assert not at.exception
        caption = next(c.value for c in at.caption if c.value.startswith("How far to trust it"))
        assert "cosine of the two paths" in caption and "at worst" in caption, caption
        assert any("path that its top dataset examples do not take" in w.value for w in at.warning) == warned


def test_the_pipeline_stores_what_the_path_signal_compares(trust_store):
    """Both sides of the comparison arrive through featurevis and dataset jobs that never see each other."""
    store = Store(trust_store)
    for unit in range(4):
        t = store.featurevis_trust("paths", "1", unit)
        assert t["natural_path"] is not None and t["natural_floor"] is not None
        assert -1 <= t["natural_path"] <= 1 + 1e-9 and -1 <= t["natural_floor"] <= 1 + 1e-9


def test_the_natural_range_sets_the_picture_against_the_dataset(trust_store):
    store = Store(trust_store)
    for unit in (0, 1):
        t = store.featurevis_trust("paths", "1", unit)
        stats = store.unit_stats("paths", "1", unit)
        assert t["measure"] == "spatial max" and t["top_example"] == pytest.approx(stats["max"])
        assert t["ratio_to_top"] == pytest.approx(t["picture_max"] / stats["max"])
        assert t["sigma"] == pytest.approx((t["picture_max"] - stats["mean"]) / stats["std"])


def test_seeds_disagree_when_another_units_picture_comes_as_close():
    assert trust.signals(None, None, 0.9, None, None, None, seed_baseline=0.95)["seeds_disagree"] is True
    assert trust.signals(None, None, 0.97, None, None, None, seed_baseline=0.95)["seeds_disagree"] is False
    assert trust.signals(None, None, 0.97, None, None, None)["seeds_disagree"] is None  # a job of one unit


def test_two_seeds_of_a_plain_unit_agree(trust_store):
    store = Store(trust_store)
    t = store.featurevis_trust("paths", "1", 1)
    assert t["seed_agreement"] > 0.9 and t["seed_baseline"] is not None  # the job's other unit is the baseline
    assert t["seeds_disagree"] == (t["seed_agreement"] <= t["seed_baseline"])
    seeds = [r for r in store.unit_featurevis("paths", "1", 1) if r["technique"] == "channel"]
    assert [r["facet"] for r in seeds] == [0, 1] and seeds[0]["image"] != seeds[1]["image"]


def test_unit_json_carries_the_trust_record(capsys, trust_store):
    assert main(["unit", "paths", "1", "0", "--json", "--store", str(trust_store)]) == 0
    rows = json.loads(capsys.readouterr().out)["featurevis"]
    first = next(r for r in rows if (r["technique"], r["facet"]) == ("channel", 0))
    assert set(first["trust"]) == {"measure", "picture_max", "top_example", "ratio_to_top", "sigma",
                                   "seed_agreement", "seed_baseline", "seeds_disagree", "natural_path", "natural_floor",
                                   "unnatural_path"}
    assert first["trust"]["seed_agreement"] is not None
    assert all("sigma" in r and "spatial_max" in r for r in rows)
    assert sum("trust" in r for r in rows) == 1


def test_signals_where_sources_are_missing():
    t = trust.signals(None, None, None, None, None, None)
    assert t["sigma"] is None and t["seeds_disagree"] is None and t["unnatural_path"] is None
    assert trust.correlation(np.ones(4), np.arange(4)) is None  # a constant profile has no correlation
    assert trust.natural_floor(np.eye(2)) is None  # under three examples: no floor
    same = np.array([[1.0, 2, 3], [1, 2, 3.5], [1, 2.5, 3]])
    assert trust.natural_floor(same) > 0.99
    assert trust.natural_floor(np.eye(3)) == 0  # three examples lit through three different inputs
