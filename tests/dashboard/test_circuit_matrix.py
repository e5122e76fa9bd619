"""The layer page's weight matrix ordering (dashboard/circuit_matrix.py), on matrices whose families are planted:
units of one family read the same inputs, so `family` order must put each family in one contiguous block, rows
and columns alike, whatever order the units came in."""

import numpy as np
import pytest

from dashboard.circuit_matrix import family_order, ordered


def planted(seed: int, row_sizes: list[int], column_sizes: list[int], noise: float) -> tuple:
    """(weights, row family of each unit, column family of each input unit), rows and columns shuffled. Each
    family of units excites its own family of inputs and mildly inhibits the others; every unit has its own
    gain (the ordering must not care about scale) and noise on each weight."""
    rng = np.random.default_rng(seed)
    blocks = 2 * np.eye(len(row_sizes)) - 0.5
    rows = np.repeat(np.arange(len(row_sizes)), row_sizes)
    columns = np.repeat(np.arange(len(column_sizes)), column_sizes)
    gains = rng.uniform(0.5, 2.0, size=(len(rows), 1))
    weights = gains * (blocks[rows][:, columns] + noise * rng.normal(size=(len(rows), len(columns))))
    row_perm, column_perm = rng.permutation(len(rows)), rng.permutation(len(columns))
    return weights[np.ix_(row_perm, column_perm)], rows[row_perm], columns[column_perm]


def blocks(labels: np.ndarray) -> int:
    """How many runs of equal labels: the number of families exactly when each family is contiguous."""
    return 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))


@pytest.mark.parametrize("row_sizes, column_sizes", [
    ([10, 14], [5, 9]),  # two families: one of them sits at ±180° of the projection, where a naive cut splits it
    ([10, 12, 8], [5, 7, 8]),
    ([6, 30, 9], [12, 4, 7]),  # unequal families
])
@pytest.mark.parametrize("noise", [0.2, 0.4])
def test_family_order_makes_each_planted_family_contiguous(row_sizes, column_sizes, noise):
    for seed in range(20):
        weights, row_family, column_family = planted(seed, row_sizes, column_sizes, noise)
        units = np.arange(100, 100 + len(weights))  # unit numbers that are not row indices
        row_units, column_units, shown = ordered(units, weights, "family")
        assert sorted(row_units) == list(units) and sorted(column_units) == list(range(weights.shape[1]))
        assert blocks(row_family[row_units - 100]) == len(row_sizes), seed
        assert blocks(column_family[column_units]) == len(column_sizes), seed
        assert np.array_equal(shown, weights[np.ix_(row_units - 100, column_units)])  # cells move with their units


def test_family_order_ignores_scale_and_handles_tiny_matrices():
    weights, family, _ = planted(0, [8, 8], [4, 4], 0.2)
    assert np.array_equal(family_order(weights), family_order(weights * 1000))
    assert list(family_order(weights[:2])) == [0, 1]  # too few rows to find families: unit order
    single = family_order(weights[:, :1])  # one input: its excited rows, then its inhibited ones, or the reverse
    assert sorted(single) == list(range(16)) and blocks(np.sign(weights[single, 0])) == 2
