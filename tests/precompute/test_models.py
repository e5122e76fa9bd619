"""Every registry entry builds (pretrained weights off) and its declared layers match the module tree."""

import time

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


def test_hub_reference_offline_without_its_files_fails_fast_and_clearly(monkeypatch, tmp_path):
    # Loading from a loopback Hub and from the cache it leaves: tests/precompute/test_hub.py.
    from tests.hub_support import use_hub

    use_hub(monkeypatch, tmp_path, offline=True)
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"^model hf-hub:timm/resnet18.a1_in1k@main is not in the Hub cache .*"
                                         r"`hf download timm/resnet18.a1_in1k --revision main`"):
        resolve("hf-hub:timm/resnet18.a1_in1k@main")
    assert time.monotonic() - start < 5
    with pytest.raises(ModelError, match="expected hf-hub:ORG/NAME"):
        resolve("hf-hub:resnet18")


def test_inceptionv1_has_microscopes_layers_units_and_spelling():
    spec = resolve("inceptionv1")
    model = build(spec, pretrained=False)
    expected = {"conv2d0": 64, "conv2d1": 64, "conv2d2": 192, "mixed3a": 256, "mixed3b": 480, "mixed4a": 508,
                "mixed4b": 512, "mixed4c": 512, "mixed4d": 528, "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024}
    assert {layer.name: layer.units for layer in spec.layers} == expected
    with capture(model, list(expected), stop_after_last=False) as outputs, torch.no_grad():
        got = run(model, torch.zeros(1, 3, 224, 224), outputs)
    assert {name: got[name].shape[1] for name in expected} == expected
    assert got["mixed4c"].shape[-2:] == (14, 14)
    assert spec.layer("mixed4c_0").name == "mixed4c" and spec.layer("mixed5b_0").name == "mixed5b"
    # Lucid's input: x * 255 - 117 for x in [0, 1], through precompute's (x - mean) / std.
    assert normalise([Image.new("RGB", (2, 2), (0, 0, 0))], spec.mean, spec.std).flatten().tolist() == \
        pytest.approx([-117.0] * 12)


def test_inceptionv1_reads_the_weights_file_by_its_names_in_lucids_unit_order():
    from precompute import inceptionv1

    model = build(resolve("inceptionv1"), pretrained=False)
    # The weights file names its tensors as Lucid's graph does; a few, with their shapes, written out here.
    state = {inceptionv1._file_key(key): torch.zeros_like(value) for key, value in model.state_dict().items()}
    assert len(state) == 2 * (3 + 9 * 6) + 2
    assert state["conv2d0_pre_relu_conv.weight"].shape == (64, 3, 7, 7)
    assert state["mixed4c_3x3_bottleneck_pre_relu_conv.weight"].shape == (128, 512, 1, 1)
    assert state["mixed4a_3x3_pre_relu_conv.weight"].shape == (204, 96, 3, 3)
    assert state["softmax2_pre_activation_matmul.weight"].shape == (1008, 1024)
    # mixed4c is 1x1 (128), 3x3 (256), 5x5 (64), pool reduce (64): unit 447 is the 5x5 branch's last channel.
    state["mixed4c_5x5_pre_relu_conv.bias"][63] = 1.0
    inceptionv1.load_weights(model, state)
    with capture(model, ["mixed4c"]) as outputs, torch.no_grad():
        got = run(model, torch.zeros(1, 3, 224, 224), outputs)["mixed4c"]
    assert got.amax((0, 2, 3)).nonzero().flatten().tolist() == [447]
    del state["mixed4c_5x5_pre_relu_conv.bias"]
    with pytest.raises(ValueError, match="missing tensor mixed4c_5x5_pre_relu_conv.bias"):
        inceptionv1.load_weights(model, state)


def test_inceptionv1_without_its_weights_offline_is_one_line_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # a torch.hub cache without the file
    monkeypatch.setenv("MICROSCOPE_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        build(resolve("inceptionv1"))
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert str(tmp_path / "hub" / "checkpoints" / "inception5h.pth") in message
    assert "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth" in message
    assert not (tmp_path / "hub").exists()


def test_inceptionv1_loads_the_weights_file_from_torch_hubs_cache(monkeypatch, tmp_path):
    from precompute import inceptionv1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("MICROSCOPE_OFFLINE", "1")  # the file is there: nothing to download
    source = inceptionv1.InceptionV1()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({inceptionv1._file_key(k): v for k, v in source.state_dict().items()}, inceptionv1.weights_path())
    model = build(resolve("inceptionv1"))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), source.eval()(x))
    inceptionv1.weights_path().write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot load the InceptionV1 weights from .*delete the file"):
        build(resolve("inceptionv1"))


def test_inceptionv1_paths_between_mixed_layers_are_linear_and_lrn_is_not():
    from precompute.linear_paths import NotLinearPath, expanded_weights

    torch.manual_seed(0)
    model = build(resolve("inceptionv1"), pretrained=False)
    pair = expanded_weights(model, "mixed4b", "mixed4c", 224, units=[0, 447, 500])
    # mixed4c's unit 0 is its 1x1 branch's first channel: the weights are that convolution's.
    kernel = model.mixed4c.get_submodule("1x1").conv.weight[0, :, 0, 0].double()
    assert torch.allclose(torch.from_numpy(pair.weights[0]), kernel, atol=1e-6)
    assert pair.support == (5, 5)  # the 5x5 branch (unit 447) is the widest
    with pytest.raises(NotLinearPath, match="local_response_norm"):
        expanded_weights(model, "conv2d2", "mixed3a", 224, units=[0])
