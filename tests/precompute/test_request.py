import pytest

from precompute.models import REGISTRY, ModelError
from precompute.request import UsageError, parse_techniques, parse_units, select_layers


def test_units_all_ranges_and_singles():
    assert parse_units("all", 4, "l") == [0, 1, 2, 3]
    assert parse_units("0-2,7, 5", 10, "l") == [0, 1, 2, 5, 7]


@pytest.mark.parametrize("text", ["a", "3-1", "1-", "", "1,,x"])
def test_bad_unit_syntax(text):
    with pytest.raises(UsageError, match="bad unit range"):
        parse_units(text, 10, "l")


def test_unit_out_of_range_names_the_layer_and_its_range():
    with pytest.raises(UsageError, match=r"unit 12 is out of range for layer blocks.1 \(units 0-9\)"):
        parse_units("0-12", 10, "blocks.1")


def test_techniques():
    assert {"stats", "dataset", "tuning", "featurevis"} <= set(parse_techniques("all"))
    # Not featurevis.
    assert parse_techniques("default") == ["stats", "dataset", "tuning", "circuits", "similar", "classes"]
    assert parse_techniques("dataset") == ["dataset"]
    with pytest.raises(UsageError, match="unknown technique 'featureviz'"):
        parse_techniques("stats,featureviz")


def test_layers_by_name_or_alias_and_unknown():
    spec = REGISTRY["efficientnet_lite0.bundled"]
    assert select_layers("b3,conv_head,blocks.3", spec) == ["blocks.3", "conv_head"]
    with pytest.raises(ModelError, match="unknown layer 'blocks.9'"):
        select_layers("blocks.9", spec)


def test_a_registry_model_gets_every_layer_it_lists_by_default_and_no_convs_set():
    spec = REGISTRY["efficientnet_lite0.bundled"]
    assert select_layers("default", spec) == select_layers("all", spec) == [layer.name for layer in spec.layers]
    with pytest.raises(UsageError, match="--layers convs is for models the registry does not describe"):
        select_layers("convs", spec)
