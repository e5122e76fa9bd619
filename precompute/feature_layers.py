"""Dictionary layers: the features of a sparse dictionary of layer L as a layer of the model, `L/NAME`.

A trained dictionary's encoder becomes a small module (`FeatureLayer`) that the model runs right after L's
own forward, on L's output, producing the feature map (batch, features, height, width). It is listed by the
model's `named_modules()` under the feature layer's name, so everything that finds layers by module path
(hooks.capture, the renderer, linear paths) finds it, and a deep copy of the model (the renderer's) keeps
it. It is not a registered child: the module tree, state dict and forward of the network stay as they were.
The encoder runs only when something hooks it (a capture), so the network costs the same otherwise.

The feature layer's backward pass is that of the pre-TopK ReLU (a straight-through estimator for the
TopK's choice): feature visualisation can climb a feature that TopK has not selected yet. Forward values
are the TopK activations, as the dictionary computes them.
"""

from __future__ import annotations

import dataclasses
import io
import json

import pyarrow.parquet as pq
import torch
from torch import nn

from precompute.hooks import channels_first
from precompute.layers import as_maps
from precompute.models import Layer, ModelSpec
from store import shards, workdir

TECHNIQUE = "dictionary"


def is_feature_layer(name: str) -> bool:
    """Canonical module paths hold no `/`; a dictionary layer is `BASE/NAME`."""
    return "/" in name


def base_of(name: str) -> str:
    return name.rsplit("/", 1)[0]


class FeatureLayer(nn.Module):
    """The encoder of a TopK dictionary on a layer's output: (B, C, H, W) or tokens -> (B, F, H, W)."""

    def __init__(self, encoder: torch.Tensor, b_enc: torch.Tensor, b_pre: torch.Tensor, k: int,
                 direction: torch.Tensor | None = None):
        super().__init__()
        self.k = int(k)
        self.register_buffer("encoder", encoder.float())  # (F, C), in the layer's own units
        # (F, C) unit-norm decoder rows: what a feature writes back into the layer (class votes read it)
        self.register_buffer("direction", (direction if direction is not None else encoder).float())
        self.register_buffer("b_enc", b_enc.float())
        self.register_buffer("b_pre", b_pre.float())

    def forward(self, output: torch.Tensor) -> torch.Tensor:
        x = as_maps(output if not isinstance(output, (tuple, list)) else output[0]).float()
        pre = torch.einsum("bchw,fc->bfhw", x - self.b_pre[:, None, None], self.encoder) + self.b_enc[:, None, None]
        act = torch.relu(pre)
        index = pre.detach().topk(min(self.k, pre.shape[1]), dim=1).indices
        mask = torch.zeros_like(pre).scatter_(1, index, 1.0)
        # forward: the TopK activations; backward: the ReLU's (see the module docstring)
        return act - (act * (1.0 - mask)).detach()


_HOSTS: dict[type, type] = {}
_ROOTS: dict[type, type] = {}


def _host_class(cls: type) -> type:
    """`cls` whose forward also runs the feature layers attached to it, on its output."""
    if cls not in _HOSTS:
        def forward(self, *args, **kwargs):
            out = super(host, self).forward(*args, **kwargs)
            for feature in self.__dict__["_microscope_features"]:
                if feature._forward_hooks or feature._forward_pre_hooks:
                    feature(channels_first(self, out))  # a channels-last base layer is read as channels
            return out

        host = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__})
        _HOSTS[cls] = host
    return _HOSTS[cls]


def _root_class(cls: type) -> type:
    """`cls` whose named_modules() also lists the attached feature layers under their layer names."""
    if cls not in _ROOTS:
        def named_modules(self, memo=None, prefix="", remove_duplicate=True):
            yield from super(root, self).named_modules(memo, prefix, remove_duplicate)
            if not prefix:
                yield from self.__dict__["_microscope_layers"].items()

        root = type(cls.__name__, (cls,), {"named_modules": named_modules, "__module__": cls.__module__})
        _ROOTS[cls] = root
    return _ROOTS[cls]


def attach(model: nn.Module, name: str, feature: FeatureLayer) -> None:
    """Makes `feature` the model's layer `name` (`BASE/NAME`), run on BASE's output; replaces one of that name."""
    base = base_of(name)
    modules = dict(nn.Module.named_modules(model))
    if base not in modules:
        raise KeyError(f"no module named {base!r}")
    host = modules[base]
    layers = model.__dict__.setdefault("_microscope_layers", {})
    if name in layers:
        old = layers.pop(name)
        host.__dict__["_microscope_features"].remove(old)
    if type(host) not in _HOSTS.values():
        host.__dict__["_microscope_features"] = []
        host.__class__ = _host_class(type(host))
    if type(model) not in _ROOTS.values():
        model.__class__ = _root_class(type(model))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    feature = feature.to(device).requires_grad_(False)
    host.__dict__["_microscope_features"].append(feature)
    layers[name] = feature


@dataclasses.dataclass(frozen=True)
class Stored:
    """A dictionary that a finished dictionary job left in the work folder."""

    layer: str  # the feature layer, BASE/NAME
    features: int
    k: int
    key: str  # the job that trained it: the feature layer's jobs carry it in their params
    finished_at: float
    shard: str  # the shard's folder, relative to the work folder


def stored(work: workdir.Location, model_id: str) -> dict[str, Stored]:
    """The newest finished dictionary of each feature layer of the model in the work folder."""
    found: dict[str, Stored] = {}
    rel = f"shards/{shards.slug(model_id)}/{TECHNIQUE}"
    metas = sorted(name for name in workdir.names_under(work, rel) if name.endswith("/meta.json"))
    for name in metas:
        meta = json.loads(workdir.read_text(work, name) or "{}")
        folder = name.rsplit("/", 1)[0]
        for row in _table(work, f"{folder}/dictionaries.parquet").select(["layer", "features", "k"]).to_pylist():
            entry = Stored(row["layer"], int(row["features"]), int(row["k"]), meta["key"],
                           float(meta["finished_at"]), folder)
            if entry.layer not in found or entry.finished_at > found[entry.layer].finished_at:
                found[entry.layer] = entry
    return found


def _table(work: workdir.Location, rel: str):
    if not workdir.is_url(work):
        return pq.read_table(work / rel)
    fs, root = workdir.filesystem(work)
    return pq.read_table(io.BytesIO(fs.cat_file(f"{root}/{rel}")))


def load_feature(work: workdir.Location, entry: Stored) -> FeatureLayer:
    """The encoder of a stored dictionary, from its shard's dictionary_features and dictionaries tables."""
    features = _table(work, f"{entry.shard}/dictionary_features.parquet").to_pylist()
    head = [row for row in _table(work, f"{entry.shard}/dictionaries.parquet").to_pylist()
            if row["layer"] == entry.layer]
    rows = sorted((row for row in features if row["layer"] == entry.layer), key=lambda row: row["unit"])
    encoder = torch.tensor([row["encoder"] for row in rows], dtype=torch.float32)
    b_enc = torch.tensor([row["encoder_bias"] for row in rows], dtype=torch.float32)
    b_pre = torch.tensor(head[0]["b_pre"], dtype=torch.float32)
    direction = torch.tensor([row["direction"] for row in rows], dtype=torch.float32)
    return FeatureLayer(encoder, b_enc, b_pre, entry.k, direction)


def with_stored(model: nn.Module, spec: ModelSpec, work: workdir.Location) -> tuple[ModelSpec, dict[str, Stored]]:
    """Attaches every dictionary stored in the work folder for this model whose base layer the spec lists, and
    returns the spec with each feature layer right after its base (and the dictionaries by layer)."""
    names = {layer.name for layer in spec.layers}
    found = {name: entry for name, entry in stored(work, spec.id).items() if base_of(name) in names}
    for name, entry in found.items():
        attach(model, name, load_feature(work, entry))
    layers = []
    for layer in spec.layers:
        if is_feature_layer(layer.name):
            continue
        layers.append(layer)
        layers += [Layer(name, entry.features) for name, entry in sorted(found.items()) if base_of(name) == layer.name]
    return dataclasses.replace(spec, layers=tuple(layers)), found
