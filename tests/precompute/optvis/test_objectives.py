"""Objectives on hand-made activations: each on its own, batch objectives, errors, composition arithmetic."""

import pytest
import torch

from precompute.optvis import objectives as O

L = "layer"


def acts(batch=3, units=5, size=4, seed=0, layer=L):
    return {layer: torch.randn(batch, units, size, size, generator=torch.Generator().manual_seed(seed))}


def test_channel_is_the_mean_of_the_units_map():
    a = acts()
    assert torch.allclose(O.channel(L, 2)(a), a[L][:, 2].mean(dim=(1, 2)))


def test_channels_gives_each_element_its_own_unit():
    a = acts()
    got = O.channels(L, [4, 0, 2])(a)
    want = torch.stack([a[L][0, 4].mean(), a[L][1, 0].mean(), a[L][2, 2].mean()])
    assert torch.allclose(got, want)
    assert O.channels(L, [4, 0, 2]).batch == 3
    assert O.channel(L, 1).batch is None


def test_neuron_reads_the_centre_position():
    a = acts(size=5)
    assert torch.allclose(O.neuron(L, 3)(a), a[L][:, 3, 2, 2])
    b = acts(size=4)  # even: lower right of the middle four, as Lucent
    assert torch.allclose(O.neurons(L, [0, 1, 2])(b), torch.stack([b[L][i, i, 2, 2] for i in range(3)]))


def test_negative_is_minus_the_channel():
    a = acts()
    assert torch.allclose(O.negative(L, 1)(a), -a[L][:, 1].mean(dim=(1, 2)))


def test_deepdream_is_the_mean_square_of_the_layer():
    a = acts()
    assert torch.allclose(O.deepdream(L)(a), (a[L] ** 2).mean(dim=(1, 2, 3)))


def test_direction_along_a_unit_axis_is_that_channel_at_any_length():
    a = acts()
    axis = torch.zeros(5)
    axis[3] = 7.0
    assert torch.allclose(O.direction(L, axis)(a), a[L][:, 3].mean(dim=(1, 2)), atol=1e-6)
    per_element = torch.eye(5)[[1, 4, 0]] * 3
    want = torch.stack([a[L][0, 1].mean(), a[L][1, 4].mean(), a[L][2, 0].mean()])
    assert torch.allclose(O.direction(L, per_element)(a), want, atol=1e-6)


def test_diversity_is_minus_the_similarity_to_the_other_elements():
    same = {L: torch.rand(1, 4, 3, 3).repeat(3, 1, 1, 1)}
    assert torch.allclose(O.diversity(L)(same), torch.full((3,), -2 / 3), atol=1e-5)
    # Elements with disjoint active units have orthogonal Gram matrices: nothing to penalise.
    disjoint = torch.zeros(2, 4, 3, 3)
    disjoint[0, :2] = torch.rand(2, 3, 3)
    disjoint[1, 2:] = torch.rand(2, 3, 3)
    assert torch.allclose(O.diversity(L)({L: disjoint}), torch.zeros(2), atol=1e-6)


def test_diversity_groups_compare_only_within_a_group():
    x = torch.rand(2, 4, 3, 3)
    # Groups of 2: (x0, x0) are identical, (x1, x1) too; across groups nothing is compared.
    batch = {L: torch.stack([x[0], x[0], x[1], x[1]])}
    assert torch.allclose(O.diversity(L, group=2)(batch), torch.full((4,), -0.5), atol=1e-5)
    assert O.diversity(L, group=2).block == 2
    assert O.diversity(L).block == 0


def test_caricature_scores_the_photos_own_activations_highest_among_equal_norms():
    a = acts(batch=1)
    target = a[L][0]
    other = torch.randn_like(target)
    other = other * target.norm() / other.norm()
    score = O.caricature(L, target)
    assert float(score(a)) == pytest.approx(float(target.norm()), rel=1e-4)  # dot with unit target, cos = 1
    assert float(score({L: other[None]})) < float(score(a))
    # Pointing away from the photo: the cosine term is floored at Lucid's 0.1, so the sign of the dot stays.
    assert float(score({L: -target[None]})) == pytest.approx(-float(target.norm()) * 0.1, rel=1e-4)


def test_caricature_power_sharpens_the_cosine():
    a = acts(batch=1)
    t = a[L][0] + 0.5 * torch.randn_like(a[L][0])
    low, high = O.caricature(L, t, power=0.0)(a), O.caricature(L, t, power=3.0)(a)
    assert float(high) < float(low)


def test_arithmetic_composes_scores():
    a = acts()
    c, d = O.channel(L, 1), O.deepdream(L)
    assert torch.allclose((c + 0.5 * d)(a), c(a) + 0.5 * d(a))
    assert torch.allclose((c - d)(a), c(a) - d(a))
    assert torch.allclose((-c)(a), -c(a))
    assert torch.allclose((c * 3)(a), 3 * c(a))
    assert torch.allclose((c / 4)(a), c(a) / 4)
    assert torch.allclose(sum([c, d, c])(a), 2 * c(a) + d(a))
    assert (c + 0.5 * d).layers == (L,)
    assert "0.5 * deepdream(layer)" in (c + 0.5 * d).name


def test_composition_reads_every_layer_it_needs():
    a = {**acts(layer="x"), **acts(layer="y", seed=1)}
    both = O.channel("x", 0) + O.channel("y", 1)
    assert both.layers == ("x", "y")
    assert torch.allclose(both(a), a["x"][:, 0].mean(dim=(1, 2)) + a["y"][:, 1].mean(dim=(1, 2)))


def test_objectives_multiply_by_numbers_only():
    with pytest.raises(TypeError):
        O.channel(L, 0) * O.channel(L, 1)


def test_select_restricts_per_element_parameters():
    a = acts(batch=2)
    whole = O.channels(L, [0, 1, 2, 3]) + 2 * O.deepdream(L)
    part = whole.select(1, 3)
    assert part.batch == 2
    want = torch.stack([a[L][0, 1].mean(), a[L][1, 2].mean()]) + 2 * (a[L] ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(part(a), want)


def test_pooled_objectives_are_those_that_pool_over_every_position():
    target = torch.ones(5, 4, 4)
    pooled = [O.channel(L, 0), O.negative(L, 0), O.deepdream(L), O.direction(L, [1.0] * 5), O.diversity(L),
              O.channels(L, [0, 1]) + O.diversity(L, group=2), O.channel(L, 0) - 0.5 * O.deepdream(L)]
    position_bound = [O.neuron(L, 0), O.caricature(L, target), O.channel(L, 0) + O.neuron(L, 1)]
    assert all(o.pooled for o in pooled)
    assert not any(o.pooled for o in position_bound)
    assert O.channels(L, [0, 1, 2]).select(1, 3).pooled and not O.neurons(L, [0, 1, 2]).select(1, 3).pooled


def test_select_refuses_to_split_coupled_elements():
    with pytest.raises(O.ObjectiveError, match="groups of 2"):
        (O.channels(L, [0, 1, 2, 3]) + O.diversity(L, group=2)).select(1, 3)
    assert (O.channels(L, [0, 1, 2, 3]) + O.diversity(L, group=2)).select(2, 4).batch == 2
    with pytest.raises(O.ObjectiveError, match="whole batch"):
        (O.channels(L, [0, 1]) + O.diversity(L)).select(0, 1)


def test_unit_out_of_range_is_a_clear_error():
    with pytest.raises(O.ObjectiveError, match="unit 5 is out of range .* 5 units"):
        O.channel(L, 5)(acts())
    with pytest.raises(O.ObjectiveError, match="out of range"):
        O.channels(L, [0, -1, 2])(acts())


def test_batch_mismatches_are_clear_errors():
    with pytest.raises(O.ObjectiveError, match="2 batch elements"):
        O.channels(L, [0, 1])(acts(batch=3))
    with pytest.raises(O.ObjectiveError, match="cannot combine"):
        O.channels(L, [0, 1]) + O.channels(L, [0, 1, 2])
    with pytest.raises(O.ObjectiveError, match="diversity groups"):
        O.diversity(L, group=2)(acts(batch=3))


def test_bad_targets_and_directions_are_refused():
    with pytest.raises(O.ObjectiveError):
        O.direction(L, torch.zeros(5))
    with pytest.raises(O.ObjectiveError, match="entries"):
        O.direction(L, torch.ones(4))(acts())
    with pytest.raises(O.ObjectiveError, match="shape"):
        O.caricature(L, torch.ones(5, 3, 3))(acts(size=4))
    with pytest.raises(O.ObjectiveError):
        O.caricature(L, torch.zeros(5, 4, 4))
    with pytest.raises(O.ObjectiveError, match="no activations"):
        O.channel("elsewhere", 0)(acts())
