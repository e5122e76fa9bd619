"""Models the registry does not describe: by default their block and stage outputs, in network order, not
every convolution; `--layers all` keeps every layer found and `--layers convs` every convolution."""

import pytest
import torch

from precompute.hooks import capture, run, substitute
from precompute.layers import with_layers
from precompute.models import Overrides, build, resolve
from precompute.pipeline import precompute
from precompute.request import Request, UsageError, select_layers
from store.queries import Store

pytestmark = pytest.mark.integration

FACTORIES = '''
import timm
import torch
import torchvision
from torch import nn


def timm_resnet18():
    return timm.create_model("resnet18", pretrained=False)


def timm_densenet121():
    return timm.create_model("densenet121", pretrained=False)


def timm_convnext():
    return timm.create_model("convnext_atto", pretrained=False)


def timm_mobilenet():
    return timm.create_model("mobilenetv3_small_050", pretrained=False)


def timm_vit():  # takes only its own input size
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)


def timm_swin():  # channels-last stages
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=112)


def tv_resnet18():  # no feature_info: its stages are the top-level stacks
    return torchvision.models.resnet18(weights=None)


def tv_googlenet():  # no stack at the top: its inception modules are
    return torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)


class Unfold(nn.Module):
    """Puts patches, not the batch, first (as MobileViT's unfolding does): its output holds no units."""

    def forward(self, x):
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * b, c, h // 2, w // 2)


class Fold(nn.Module):
    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(2, 2, n // 4, c, h, w).permute(2, 3, 4, 0, 5, 1).reshape(n // 4, c, 2 * h, 2 * w)


class ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class ToChannelsFirst(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def channels_last_copy():
    """Layer "2" is layer "0" again, channels-last (a linear layer acting on the last dimension, as in Swin):
    read as channels, its units are "0"'s units and answer alike."""
    torch.manual_seed(0)
    copy = nn.Linear(5, 5)
    with torch.no_grad():
        copy.weight.copy_(torch.eye(5))
        copy.bias.zero_()
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), ToChannelsLast(), copy, ToChannelsFirst(), nn.Conv2d(5, 3, 1))


def unfolding():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Unfold(), nn.Conv2d(4, 4, 1), Fold(), nn.Conv2d(4, 6, 1))
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    path = tmp_path_factory.mktemp("factories") / "random_models.py"
    path.write_text(FACTORIES)
    return path


def _spec(factories, name: str, size: int = 64):
    spec = resolve(f"{factories}:{name}", Overrides(name=name, input_size=size))
    return with_layers(spec, build(spec))


@pytest.mark.parametrize("name, default", [
    ("timm_resnet18", ["act1", "layer1", "layer2", "layer3", "layer4"]),
    ("timm_densenet121", ["features.norm0", "features.denseblock1", "features.denseblock2", "features.denseblock3",
                          "features.norm5"]),
    ("timm_convnext", ["stages.0", "stages.1", "stages.2", "stages.3"]),
    ("timm_mobilenet", ["bn1", "blocks.0", "blocks.1", "blocks.3", "blocks.5"]),
    ("timm_vit", [f"blocks.{i}" for i in range(12)]),
    ("timm_swin", ["layers.0", "layers.1", "layers.2", "layers.3"]),
    ("tv_resnet18", ["layer1", "layer2", "layer3", "layer4"]),
    ("tv_googlenet", ["conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
                      "inception4c", "inception4d", "inception4e", "inception5a", "inception5b"]),
])
def test_default_layers_are_block_and_stage_outputs_in_order(factories, name, default):
    spec = _spec(factories, name, {"tv_googlenet": 96, "timm_swin": 112}.get(name, 64))
    assert select_layers("default", spec) == default
    everything = select_layers("all", spec)
    convs = select_layers("convs", spec)
    assert len(everything) > 30 and set(default) < set(everything) and set(convs) < set(everything)
    assert [n for n in everything if n in convs] == convs  # convolutions in network order too
    modules = dict(build(resolve(f"{factories}:{name}")).named_modules())
    assert all(type(modules[n]).__name__ == "Conv2d" for n in convs)
    if name == "timm_swin":  # stage outputs are channels-last: their units are channels, not rows
        assert [(layer.units, layer.channels_last) for layer in spec.layers if layer.name in default] == [
            (96, True), (192, True), (384, True), (768, True)]


def test_a_module_whose_output_does_not_keep_the_batch_first_is_no_layer(factories):
    spec = _spec(factories, "unfolding", 16)
    assert [layer.name for layer in spec.layers] == ["0", "4"]  # not Unfold, "2" (patches first) or Fold
    with pytest.raises(UsageError, match="layer '2' of unfolding holds no units: its output does not keep the batch"):
        select_layers("0,2", spec)


def test_channels_last_maps_are_read_as_channels(factories, tmp_path):
    spec = resolve(f"{factories}:channels_last_copy", Overrides(name="cl", input_size=16))
    model = build(spec)
    spec = with_layers(spec, model)
    assert [(layer.name, layer.units, layer.channels_last) for layer in spec.layers] == [
        ("0", 5, False), ("2", 5, True), ("4", 3, False)]
    x = torch.rand(2, 3, 16, 16)
    with capture(model, ["0", "2"]) as outputs, torch.no_grad():
        got = run(model, x, outputs)
    assert got["2"].shape == (2, 5, 16, 16) and torch.allclose(got["2"], got["0"], atol=1e-6)
    # A substituted channels-first map goes back into the network channels-last.
    with substitute(model, "2", lambda maps: torch.zeros_like(maps)), torch.no_grad():
        assert torch.allclose(model(x), model[4].bias.view(1, 3, 1, 1).expand(2, 3, 16, 16))

    store = tmp_path / "cl.duckdb"
    precompute(Request(model=f"{factories}:channels_last_copy", store=store, techniques="stats,dataset",
                       max_images=24, k=4, progress=False, overrides=Overrides(name="cl", input_size=16)))
    reader = Store(store)
    assert {row["layer"]: row["units"] for row in reader.layers("cl")} == {"0": 5, "2": 5, "4": 3}
    for unit in range(5):
        first, last = reader.unit_record("cl", "0", unit), reader.unit_record("cl", "2", unit)
        assert last["stats"]["max"] == pytest.approx(first["stats"]["max"], rel=1e-5)
        assert [e["source_box"] for e in last["dataset"]["top"]] == [e["source_box"] for e in first["dataset"]["top"]]
