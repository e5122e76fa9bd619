"""Models the registry does not describe: by default their block and stage outputs, in network order, not
every convolution; `--layers all` keeps every layer found and `--layers convs` every convolution."""

import pytest

from precompute.layers import with_layers
from precompute.models import Overrides, build, resolve
from precompute.request import UsageError, select_layers

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
    ("tv_resnet18", ["layer1", "layer2", "layer3", "layer4"]),
    ("tv_googlenet", ["conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a", "inception4b",
                      "inception4c", "inception4d", "inception4e", "inception5a", "inception5b"]),
])
def test_default_layers_are_block_and_stage_outputs_in_order(factories, name, default):
    spec = _spec(factories, name, 96 if name == "tv_googlenet" else 64)
    assert select_layers("default", spec) == default
    everything = select_layers("all", spec)
    convs = select_layers("convs", spec)
    assert len(everything) > 30 and set(default) < set(everything) and set(convs) < set(everything)
    assert [n for n in everything if n in convs] == convs  # convolutions in network order too
    modules = dict(build(resolve(f"{factories}:{name}")).named_modules())
    assert all(type(modules[n]).__name__ == "Conv2d" for n in convs)


def test_a_module_whose_output_does_not_keep_the_batch_first_is_no_layer(factories):
    spec = _spec(factories, "unfolding", 16)
    assert [layer.name for layer in spec.layers] == ["0", "4"]  # not Unfold, "2" (patches first) or Fold
    with pytest.raises(UsageError, match="layer '2' of unfolding holds no units: its output does not keep the batch"):
        select_layers("0,2", spec)
