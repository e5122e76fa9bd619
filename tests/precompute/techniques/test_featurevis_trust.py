"""The trust signals of issue 15 (store/trust.py): on profiles whose answer is known by construction, and
through the pipeline on a layer with a natural and an unnatural path to one unit.

The layer's units read two kinds of feature. Natural ones: brightness and colour fields of a few pixels, which
photos are full of. Unnatural ones: a red-green checkerboard of single pixels, which the bundled photos
(smooth, downsampled crops) hardly contain. Unit 0 reads brightness plus ten times the checkerboard. Measured
here at 256 steps: its picture raised the checkerboard units to 15-59 standard deviations above the photos',
but so did unit 1's (brightness alone, 11-33 sd): the renderer's high-frequency residue, which a unit that
photos never move reads as loudly as a deliberate pattern. So the marking is tested on profiles built to
have a known answer, and the pipeline test checks the plumbing and the natural range.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from precompute.cli import main
from precompute.models import Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from store import trust
from store.queries import Store

pytestmark = pytest.mark.integration

FACTORY = '''
import torch
from torch import nn


def build():
    k = 5
    flat = torch.ones(k, k) / (k * k)
    checker = torch.tensor([[(-1.0) ** (y + x) for x in range(k)] for y in range(k)]) / (k * k)
    zero = torch.zeros(k, k)

    def colour(r, g, b, pattern):
        return torch.stack([r * pattern, g * pattern, b * pattern])

    natural = [colour(1, 1, 1, flat), colour(1, 0, 0, flat), colour(0, 1, 0, flat), colour(0, 0, 1, flat),
               colour(1, 1, 0, flat)]
    unnatural = [colour(1, -1, 0, checker), colour(-1, 1, 0, checker), colour(1, -1, 0, checker) * 0.5]
    kernels = [natural[0] + 10 * unnatural[0], natural[0], *natural[1:], *unnatural]
    conv = nn.Conv2d(3, len(kernels), k, padding=k // 2)
    conv.weight.data = torch.stack(kernels)
    conv.bias.data = torch.zeros(len(kernels))
    return nn.Sequential(nn.Sequential(conv, nn.ReLU()), nn.AdaptiveAvgPool2d(1), nn.Flatten())
'''


@pytest.fixture(scope="module")
def trust_store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trust")
    (folder / "paths.py").write_text(FACTORY)
    store = folder / "s.duckdb"
    precompute(Request(model=f"{folder / 'paths.py'}:build", store=store, layers="0", units="0-1",
                       techniques="stats,dataset,featurevis", max_images=64, k=8, progress=False,
                       options={"size": 32, "steps": 48}, overrides=Overrides(name="paths", input_size=64)))
    return store


def test_a_picture_that_takes_another_path_than_the_top_examples_is_marked():
    """Built by construction: a layer of 12 units whose top examples raise units 0-5 (the natural path) with
    noise; one picture raises unit 0 through units 6-11 (another path), one through units 0-5."""
    rng = np.random.default_rng(0)
    mean, std = np.full(12, 1.0), np.full(12, 0.5)
    natural = np.r_[np.full(6, 2.0), np.full(6, 1.0)]
    tops = natural + rng.normal(0, 0.2, (16, 12))
    floor = trust.natural_floor(trust.standardise(tops, mean, std))
    odd = np.r_[3.0, np.full(5, 1.0), np.full(6, 3.0)]
    plain = natural + rng.normal(0, 0.2, 12)
    top = trust.encode(tops.mean(axis=0))
    marked = trust.signals(3.0, None, None, trust.encode(odd), top, floor, mean, std)
    kept = trust.signals(2.0, None, None, trust.encode(plain), top, floor, mean, std)
    assert marked["unnatural_path"] is True and kept["unnatural_path"] is False, (marked, kept)
    assert marked["natural_path"] < floor <= kept["natural_path"]


def test_the_pipeline_stores_what_the_path_signal_compares(trust_store):
    """Both sides of the comparison arrive through featurevis and dataset jobs that never see each other."""
    store = Store(trust_store)
    for unit in (0, 1):
        t = store.featurevis_trust("paths", "0", unit)
        assert t["natural_path"] is not None and t["natural_floor"] is not None
        assert -1 <= t["natural_path"] <= 1 and -1 <= t["natural_floor"] <= 1
        assert t["unnatural_path"] == (t["natural_path"] < t["natural_floor"])


def test_the_natural_range_sets_the_picture_against_the_dataset(trust_store):
    store = Store(trust_store)
    for unit in (0, 1):
        t = store.featurevis_trust("paths", "0", unit)
        stats = store.unit_stats("paths", "0", unit)
        assert t["measure"] == "spatial max" and t["top_example"] == pytest.approx(stats["max"])
        assert t["ratio_to_top"] == pytest.approx(t["picture_max"] / stats["max"])
        assert t["sigma"] == pytest.approx((t["picture_max"] - stats["mean"]) / stats["std"])


def test_seeds_disagree_when_another_units_picture_comes_as_close():
    assert trust.signals(None, None, 0.9, None, None, None, seed_baseline=0.95)["seeds_disagree"] is True
    assert trust.signals(None, None, 0.97, None, None, None, seed_baseline=0.95)["seeds_disagree"] is False
    assert trust.signals(None, None, 0.97, None, None, None)["seeds_disagree"] is None  # a job of one unit


def test_two_seeds_of_a_plain_unit_agree(trust_store):
    store = Store(trust_store)
    t = store.featurevis_trust("paths", "0", 1)
    assert t["seed_agreement"] > 0.9 and t["seed_baseline"] is not None  # the job's other unit is the baseline
    assert t["seeds_disagree"] == (t["seed_agreement"] <= t["seed_baseline"])
    seeds = [r for r in store.unit_featurevis("paths", "0", 1) if r["technique"] == "channel"]
    assert [r["facet"] for r in seeds] == [0, 1] and seeds[0]["image"] != seeds[1]["image"]


def test_unit_json_carries_the_trust_record(capsys, trust_store):
    assert main(["unit", "paths", "0", "0", "--json", "--store", str(trust_store)]) == 0
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
    assert trust.natural_floor(same) > 0.8
