"""What `microscope precompute` is asked for: the request, and the parsing of its command-line values into
layers, units, techniques and a device, each failure one line for the user (`UsageError`, exit status 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from precompute.models import ModelSpec, Overrides
from precompute.techniques import DEFAULT_TECHNIQUES, TECHNIQUES
from store import workdir
from store.errors import MicroscopeError

EXECUTORS = ("local", "ray")


class UsageError(MicroscopeError, ValueError):
    """A bad command-line value; the message is one line for the user."""

    exit_code = 2


@dataclass
class Request:
    model: str
    store: Path
    layers: str = "default"
    units: str = "all"
    techniques: str = "default"
    dataset: str = "sample"
    device: str = "cpu"
    seed: int = 0
    k: int = 16
    batch_size: int = 32
    reservoir: int = 20_000
    max_images: int | None = None  # use only the first N dataset items (quick runs and tests)
    options: dict = field(default_factory=dict)  # technique settings from the command line (featurevis's preset)
    work: Path | str | None = None  # a local path, or an object-store URL such as s3://bucket/prefix
    overrides: Overrides = field(default_factory=Overrides)
    progress: bool = True
    executor: str = "local"  # local (in this process) or ray
    address: str | None = None  # the Ray cluster to join; None starts a local one

    @property
    def work_dir(self) -> workdir.Location:
        return workdir.location(self.work) or workdir.default_for(self.store)


def parse_units(text: str, count: int, layer: str) -> list[int]:
    """`all`, or comma-separated units and inclusive ranges: `0-15,40`."""
    if text.strip() == "all":
        return list(range(count))
    units: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                units.update(range(lo, hi + 1))
            else:
                units.add(int(part))
        except ValueError:
            raise UsageError(f"bad unit range {part!r}: expected e.g. 0-15,40 or all") from None
    bad = [u for u in units if not 0 <= u < count]
    if bad:
        raise UsageError(f"unit {min(bad) if min(bad) < 0 else max(bad)} is out of range for layer {layer} "
                         f"(units 0-{count - 1})")
    return sorted(units)


def parse_techniques(text: str) -> list[str]:
    """A comma list of technique names, where `default` and `all` stand for their sets (`default,dictionary`)."""
    named = {"all": list(TECHNIQUES), "default": list(DEFAULT_TECHNIQUES)}
    chosen = list(dict.fromkeys(name for part in text.split(",") if part.strip()
                                for name in named.get(part.strip(), [part.strip()])))
    unknown = [t for t in chosen if t not in TECHNIQUES]
    if unknown or not chosen:
        raise UsageError(f"unknown technique {unknown[0] if unknown else text!r}; available: {', '.join(TECHNIQUES)}")
    return chosen


def select_layers(text: str, spec: ModelSpec) -> list[str]:
    """`all`, `default` (for a model the registry lists, all of its layers; for one whose layers were
    discovered, its block and stage outputs), `convs` (a discovered model's convolutions) or names/aliases."""
    text = text.strip()
    if text == "all" or (text == "default" and not spec.discovered):
        return [layer.name for layer in spec.layers]
    if text in ("default", "convs"):
        if not spec.discovered:
            raise UsageError(f"--layers convs is for models the registry does not describe; {spec.id} lists its "
                             "layers: use all or name them")
        chosen = list(spec.layer_set(text) or ())
        if not chosen:
            raise UsageError(f"model {spec.id} has no convolutions; use --layers all or name the layers")
        return chosen
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name in (spec.layer_set("unbatched") or ()):
            raise UsageError(f"layer {name!r} of {spec.id} holds no units: its output does not keep the batch in "
                             "its first dimension")
    known = {layer.name for layer in spec.layers}
    for name in names:
        if "/" in name and name not in known:
            base = name.rsplit("/", 1)[0]
            raise UsageError(f"dictionary layer {name} of {spec.id} is not computed: learn it with `microscope "
                             f"precompute {spec.id} --layers {base} --techniques dictionary` (--features, --dict-k "
                             "to match its name)")
    return list(dict.fromkeys(spec.layer(name).name for name in names))


def parse_executor(name: str) -> str:
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")
    return name


def check_device(name: str) -> torch.device:
    """The device the jobs run on, which must exist here."""
    device = _device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name} asked for, but no CUDA GPU is available here; use --device cpu")
    return device


def driver_device(name: str) -> torch.device:
    """Where a Ray driver builds the model to plan jobs and measure layer geometry. Workers run the jobs on the
    requested device; the driver may have no GPU at all (a laptop submitting to a cluster), and map sizes and
    receptive fields do not depend on the device."""
    device = _device(name)
    return device if device.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")


def _device(name: str) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad device {name!r}: expected cpu, cuda or cuda:N") from None
