"""Similar units and the compare view on planted networks: a unit that copies another is its top similar unit,
a model whose units are a permutation of another's is matched by that permutation (and its layers' CKA is 1),
and a store built model by model finds the neighbours across models."""

import json
import subprocess
import sys

import numpy as np
import pytest

from precompute.models import Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from store.queries import Store

pytestmark = pytest.mark.integration  # precomputes hand-built nets

PLANTED = '''
import torch
from torch import nn

PERMUTATION = [5, 2, 7, 0, 3, 6, 1, 4]


def build():
    """Layer "0": 8 units, unit 6 a copy of unit 1 at twice the gain; layer "2": 4 units, unit 3 reads only
    unit 4 of layer 0 (a copy of it, through the ReLU); layer "4": 3 units."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(),
                          nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2, padding=1))
    with torch.no_grad():
        model[0].weight[6] = 2 * model[0].weight[1]
        model[0].bias[6] = 2 * model[0].bias[1]
        model[2].weight[3] = 0
        model[2].weight[3, 4] = 1.5
        model[2].bias[3] = 0
    return model


def build_permuted():
    """build() with the units of layer "0" permuted: unit PERMUTATION[i] of this model is unit i of build()."""
    model = build()
    order = torch.tensor([PERMUTATION.index(j) for j in range(8)])
    with torch.no_grad():
        model[0].weight.copy_(model[0].weight[order])
        model[0].bias.copy_(model[0].bias[order])
        model[2].weight.copy_(model[2].weight[:, order])
    return model
'''
PERMUTATION = [5, 2, 7, 0, 3, 6, 1, 4]


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """One store, built model by model: the planted net, then its permuted twin (a second precompute into the
    same store and work folder)."""
    folder = tmp_path_factory.mktemp("similar")
    factory = folder / "planted.py"
    factory.write_text(PLANTED)
    store = folder / "s.duckdb"
    for name in ("build", "build_permuted"):
        precompute(Request(model=f"{factory}:{name}", store=store, max_images=64, techniques="stats,similar",
                           progress=False, overrides=Overrides(name=name, input_size=64)))
    return store


def test_a_copied_unit_is_the_top_similar_unit_in_its_layer_and_across_layers(planted_store):
    s = Store(planted_store)
    similar = s.unit_similar("build", "0", 1)
    best_in_layer = next(r for r in similar if r["scope"] == "layer")
    assert (best_in_layer["layer"], best_in_layer["unit"]) == ("0", 6)
    assert best_in_layer["score"] == pytest.approx(1.0, abs=2e-3)
    # Layer "2" unit 3 is 1.5 x ReLU(layer 0 unit 4): its spatial max is a copy of unit 4's (where positive).
    best_elsewhere = next(r for r in s.unit_similar("build", "2", 3) if r["scope"] == "model")
    assert (best_elsewhere["layer"], best_elsewhere["unit"]) == ("0", 4)
    assert best_elsewhere["score"] == pytest.approx(1.0, abs=2e-3)
    assert all(not (r["model"] == "build" and r["layer"] == "0" and r["unit"] == 1) for r in similar)  # not itself
    scores = [r["score"] for r in similar]
    assert scores == sorted(scores, reverse=True)


def test_a_permuted_model_is_matched_by_its_permutation(planted_store):
    s = Store(planted_store)
    result = s.compare_layers("build", "0", "build_permuted", "0")
    matched = {p["a"]: p["b"] for p in result["pairs"]}
    # Units 1 and 6 respond alike (6 is 1 at twice the gain): either may take the other's twin.
    assert {matched.pop(1), matched.pop(6)} == {PERMUTATION[1], PERMUTATION[6]}
    assert matched == {i: PERMUTATION[i] for i in range(8) if i not in (1, 6)}
    assert all(p["score"] == pytest.approx(1.0, abs=2e-3) for p in result["pairs"])
    assert result["share_good"] == 1.0 and result["cka"] == pytest.approx(1.0, abs=1e-3)
    # The units after the permuted layer are the same units: matched to themselves.
    later = s.compare_layers("build", "4", "build_permuted", "4")
    assert {p["a"]: p["b"] for p in later["pairs"]} == {0: 0, 1: 1, 2: 2}


def test_the_first_model_finds_its_twin_although_the_twin_was_precomputed_later(planted_store):
    s = Store(planted_store)
    across = [r for r in s.unit_similar("build", "0", 2) if r["scope"] == "store"]
    assert (across[0]["model"], across[0]["layer"], across[0]["unit"]) == ("build_permuted", "0", PERMUTATION[2])
    assert across[0]["score"] == pytest.approx(1.0, abs=2e-3)
    cka = {(r["layer"], r["other_layer"]): r["cka"] for r in s.layer_cka("build", "build_permuted")}
    assert all(cka[(layer, layer)] == pytest.approx(1.0, abs=1e-3) for layer in ("0", "2", "4"))
    assert cka[("0", "4")] < 0.9


def test_unit_json_lists_similar_units_across_the_store(planted_store):
    out = subprocess.run([sys.executable, "-m", "precompute.cli", "unit", "build", "0", "2", "--json", "--store",
                          str(planted_store)], capture_output=True, text=True, check=True)
    similar = json.loads(out.stdout)["similar"]
    assert {"model", "layer", "unit", "score"} <= set(similar[0])
    assert {r["model"] for r in similar} == {"build", "build_permuted"}
    assert similar[0]["score"] >= similar[-1]["score"]
    assert "similar" in [r["technique"] for r in json.loads(out.stdout)["provenance"]]


def test_the_response_sample_is_spread_over_the_dataset_in_order():
    from precompute.techniques.similar import sample

    indices = np.random.default_rng(0).permutation(10_000)
    chosen = indices[sample(indices, 100)]
    assert len(chosen) == 100 and (np.diff(chosen) > 0).all() and chosen[0] == 0 and chosen[-1] == 9_999
    assert sorted(indices[sample(indices[:50], 100)]) == sorted(indices[:50])  # all, when they fit


def test_compare_on_the_command_line_prints_the_matching_as_json_and_refuses_unknown_layers(planted_store):
    def compare(*args):
        return subprocess.run([sys.executable, "-m", "precompute.cli", "compare", *args, "--store",
                               str(planted_store)], capture_output=True, text=True)

    out = compare("build", "0", "build_permuted", "0", "--json")
    assert out.returncode == 0, out.stderr
    pairs = json.loads(out.stdout)["pairs"]
    assert {(p["a"], p["b"]) for p in pairs if p["a"] not in (1, 6)} == {
        (i, PERMUTATION[i]) for i in range(8) if i not in (1, 6)}
    assert all(set(p) == {"a", "b", "score"} for p in pairs)
    bad = compare("build", "9", "build_permuted", "0")
    assert bad.returncode != 0 and bad.stderr.strip() == "microscope: error: model build has no layer '9'"
