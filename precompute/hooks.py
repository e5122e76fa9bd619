"""Hooks are global state: this one context manager captures module outputs by path and always removes them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

# Set on a module whose 4-D output is channels-last (batch, height, width, channels), as Swin's stages are
# (`layers.channels_last`): every reader of this package sees it as (batch, channels, height, width).
CHANNELS_LAST = "_microscope_channels_last"


def channels_first(module: nn.Module, output):
    """The module's output as every technique reads it: channels-last maps become a channels-first view."""
    if getattr(module, CHANNELS_LAST, False) and isinstance(output, torch.Tensor) and output.ndim == 4:
        return output.permute(0, 3, 1, 2)
    return output


class StopForward(Exception):
    """Raised by the capture hook of the deepest requested layer: nothing after it needs computing."""


@contextmanager
def capture(model: nn.Module, paths: Sequence[str], stop_after_last: bool = True,
            inputs: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Yields a dict that each forward pass fills with {path: output}; see `run` to drive a pass.

    With `stop_after_last`, the forward pass is cut short once every requested module has produced its
    output (the deepest layer in execution order), so early layers cost only the early part of the network.
    With `inputs`, each module's input is kept instead, before the module runs (as the model's stream lays it
    out): a copy, which no in-place operation after it can change, or None where the module is not called
    with one tensor.
    """
    modules = dict(model.named_modules())
    missing = [p for p in paths if p not in modules]
    if missing:
        raise KeyError(f"no module named {missing[0]!r}")
    outputs: dict[str, torch.Tensor] = {}
    wanted = set(paths)

    def keep(path: str, value) -> None:
        # First call wins: a module applied twice (shared weights) reports its first use.
        outputs.setdefault(path, value)
        if stop_after_last and wanted.issubset(outputs):
            raise StopForward

    def hook(path: str):
        def fn(module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            keep(path, channels_first(module, output))

        return fn

    def pre_hook(path: str):
        def fn(_module, args):
            keep(path, args[0].detach().clone() if len(args) == 1 and isinstance(args[0], torch.Tensor) else None)

        return fn

    handles = [modules[p].register_forward_pre_hook(pre_hook(p)) if inputs else
               modules[p].register_forward_hook(hook(p)) for p in paths]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def run(model: nn.Module, x: torch.Tensor, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward pass inside `capture`: clears the previous batch's outputs and returns this batch's."""
    outputs.clear()
    try:
        model(x)
    except StopForward:
        pass
    return dict(outputs)


@contextmanager
def substitute(model: nn.Module, path: str, replace) -> Iterator[None]:
    """Inside the block, the output of module `path` becomes `replace(output)` (where that returns a tensor;
    None keeps the output). Used to feed chosen activations into the rest of the network."""
    modules = dict(model.named_modules())
    if path not in modules:
        raise KeyError(f"no module named {path!r}")
    module = modules[path]

    def fn(_module, _inputs, output):
        new = replace(channels_first(module, output))
        if new is not None and getattr(module, CHANNELS_LAST, False) and new.ndim == 4:
            return new.permute(0, 2, 3, 1)  # back to the layout the rest of the network expects
        return new

    handle = module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()
