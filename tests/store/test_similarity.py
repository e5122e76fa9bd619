"""store/similarity.py on planted responses: CKA is the definition's (and does not depend on how a layer's units
were split into runs), a dead unit has no neighbours, and the matching finds a planted permutation."""

import numpy as np
import pytest

from store.similarity import Block, cka_table, match, neighbours_and_cka

IMAGES = np.arange(200)


def block(model, layer, values, units=None, images=IMAGES):
    units = np.arange(len(values)) if units is None else np.asarray(units)
    return Block(model, layer, "sample", images, units, values.astype(np.float32))


def direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (units, images) response matrices with every unit standardised, as defined."""
    def z(v):
        v = v - v.mean(axis=1, keepdims=True)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    cxy, cxx, cyy = z(x) @ z(y).T, z(x) @ z(x).T, z(y) @ z(y).T
    return float((cxy ** 2).sum() / np.sqrt((cxx ** 2).sum() * (cyy ** 2).sum()))


def test_cka_is_the_definition_and_does_not_depend_on_how_a_layer_was_split_into_runs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, len(IMAGES)))
    y = rng.normal(size=(7, 5)) @ rng.normal(size=(5, len(IMAGES))) + 0.5 * rng.normal(size=(7, len(IMAGES)))
    y[:3] += x[:3]
    whole = cka_table(neighbours_and_cka([block("m", "x", x), block("n", "y", y)])[1])
    split = cka_table(neighbours_and_cka([block("m", "x", x[:5]), block("n", "y", y),
                                          block("m", "x", x[5:], units=range(5, 12))])[1])
    for table in (whole, split):
        cka = {(r.layer, r.other_layer): r.cka for r in table.itertuples()}
        assert cka[("x", "y")] == pytest.approx(direct_cka(x, y), abs=1e-5)
        assert cka[("y", "x")] == pytest.approx(cka[("x", "y")], abs=1e-7)
        assert cka[("x", "x")] == pytest.approx(1.0, abs=1e-6)


def test_a_dead_unit_has_no_neighbours_and_is_nobodys():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, len(IMAGES)))
    x[2] = 3.0  # responds the same to every image
    found, _ = neighbours_and_cka([block("m", "x", x)], top=3)
    assert 2 not in set(found["unit"]) and 2 not in set(found["other_unit"])
    assert len(found) == 3 * 2  # each live unit: the two other live units


def test_the_matching_recovers_a_planted_permutation_and_counts_good_matches():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, len(IMAGES)))
    order = rng.permutation(9)
    y = 2.0 * x[order] + 0.3 * rng.normal(size=x.shape)  # unit j of y is unit order[j] of x, rescaled, noisy
    result = match([block("m", "x", x)], [block("n", "y", y)])
    assert {p["a"]: p["b"] for p in result["pairs"]} == {int(order[j]): j for j in range(9)}
    assert result["share_good"] == 1.0 and [p["score"] for p in result["pairs"]] == sorted(
        (p["score"] for p in result["pairs"]), reverse=True)


def test_layers_shown_other_images_are_compared_on_the_images_they_share_or_not_at_all():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, len(IMAGES)))
    half = block("n", "y", x[:, 100:], images=IMAGES[100:])
    found, _ = neighbours_and_cka([block("m", "x", x), half], top=1)
    across = found[(found["model_id"] == "m") & (found["other_model"] == "n")]
    assert dict(zip(across["unit"], across["other_unit"])) == {0: 0, 1: 1, 2: 2}
    assert np.allclose(across["score"], 1.0, atol=1e-3)
    few = block("n", "y", x[:, :10], images=IMAGES[:10])  # under MIN_IMAGES in common
    found, _ = neighbours_and_cka([block("m", "x", x), few], top=1)
    assert not ((found["model_id"] == "m") & (found["other_model"] == "n")).any()
