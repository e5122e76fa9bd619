"""Every registry entry builds (pretrained weights off) and its declared layers match the module tree."""

import pytest
import torch
from PIL import Image

from precompute.dataset_pass import normalise
from precompute.datasets import square
from precompute.hooks import capture, run
from precompute.layers import as_maps, discover, with_layers
from precompute.models import REGISTRY, ModelError, Overrides, build, imagenet_labels, resolve

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("model_id", list(REGISTRY))
def test_registry_layers_match_module_tree(model_id):
    spec = REGISTRY[model_id]
    model = build(spec, pretrained=False)
    assert with_layers(spec, model) is spec
    names = [layer.name for layer in spec.layers]
    with capture(model, names, stop_after_last=False) as outputs, torch.no_grad():
        got = run(model, torch.zeros(1, 3, spec.input_size, spec.input_size), outputs)
    for layer in spec.layers:
        assert as_maps(got[layer.name]).shape[1] == layer.units, layer.name
    aliases = [layer.alias for layer in spec.layers if layer.alias]
    assert len(aliases) == len(set(aliases))
    if spec.source == "hf-hub":
        assert spec.hub_id.startswith("timm/")


# Lite0 calls chelsea() a tiger cat (282), Egyptian cat (285) a close second; Lite1 and Lite2 say Egyptian cat.
BUNDLED = {"efficientnet_lite0.bundled": 282, "efficientnet_lite1.bundled": 285, "efficientnet_lite2.bundled": 285}
ESPRESSO = 967


def bundled_photos(spec, names):
    import skimage.data

    # The dataset code's preprocessing: centre square crop resized to the model's input size, the spec's mean/std.
    return normalise([square(Image.fromarray(getattr(skimage.data, n)()), spec.input_size) for n in names],
                     spec.mean, spec.std)


@pytest.mark.parametrize("model_id", list(BUNDLED))
def test_bundled_model_classifies_the_bundled_photos(model_id):
    spec = REGISTRY[model_id]
    model = build(spec)
    labels = imagenet_labels()
    with torch.no_grad():
        top = model(bundled_photos(spec, ["coffee", "chelsea"])).argmax(1).tolist()
    assert top == [ESPRESSO, BUNDLED[model_id]]
    assert labels[top[0]] == "espresso"
    assert "cat" in labels[top[1]]


@pytest.mark.parametrize("model_id", list(BUNDLED))
def test_bundled_model_normalisation_fits_its_stem_batch_norm(model_id):
    # A wrong mean/std classifies these photos just as well, so check what the weights saw in training: the
    # stem's outputs on photos should have about the variance its batch norm recorded.
    spec = REGISTRY[model_id]
    model = build(spec)
    with torch.no_grad():
        stem = model.conv_stem(bundled_photos(spec, ["coffee", "chelsea", "astronaut", "rocket"]))
    live = model.bn1.running_var > 1e-3  # channels that never fire have no variance to compare
    ratio = stem.var((0, 2, 3))[live] / model.bn1.running_var[live]
    assert ratio.log().abs().mean() < 0.7  # about 0.46 with [-1, 1] pixels, 1.27 with ImageNet mean/std


def test_discovery_finds_blocks_convs_and_linears_in_order(tiny_factory):
    spec = resolve(f"{tiny_factory}:build", Overrides(name="tiny", input_size=32))
    model = build(spec)
    layers = discover(model, 32)
    assert [(layer.name, layer.units) for layer in layers] == [("0", 8), ("2.0", 12), ("2", 12), ("5", 5)]


def test_factory_errors_are_clear(tiny_factory, tmp_path):
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        build(resolve(f"{tiny_factory}:not_a_module"))
    with pytest.raises(ModelError, match="has no callable 'missing'"):
        build(resolve(f"{tiny_factory}:missing"))
    with pytest.raises(ModelError, match="factory file not found"):
        build(resolve(f"{tmp_path}/nope.py:build"))
    with pytest.raises(ModelError, match="cannot import factory"):
        build(resolve("no_such_package.models:build"))
    with pytest.raises(ModelError, match="unknown model 'resnet9000'"):
        resolve("resnet9000")


def test_package_module_factory():
    spec = resolve("torchvision.models:alexnet", Overrides(name="alexnet-random"))
    model = build(spec)
    assert spec.id == "alexnet-random" and isinstance(model, torch.nn.Module)
    assert any(layer.name == "features.0" and layer.units == 64 for layer in discover(model, 224))


def test_local_dir_in_hub_format_loads_the_saved_weights(tmp_path):
    import timm
    from timm.models import save_for_hf

    source = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    save_for_hf(source, str(tmp_path), safe_serialization=True)
    spec = resolve(f"local-dir:{tmp_path}", Overrides(name="my-resnet"))
    model = build(spec)
    assert (spec.id, spec.arch, spec.source) == ("my-resnet", "resnet18", "local-dir")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), source(x), atol=1e-5)
    with pytest.raises(ModelError, match="no config.json"):
        resolve(f"local-dir:{tmp_path / 'missing'}")


def test_hub_reference_without_network_fails_fast_and_clearly():
    spec = resolve("hf-hub:timm/resnet18.a1_in1k@main")
    assert (spec.hub_id, spec.revision) == ("timm/resnet18.a1_in1k", "main")
    with pytest.raises(Exception) as info:
        build(spec)
    assert any(word in str(info.value).lower() for word in ("offline", "connect", "cache"))
    with pytest.raises(ModelError, match="expected hf-hub:ORG/NAME"):
        resolve("hf-hub:resnet18")
