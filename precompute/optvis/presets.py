"""Render settings as data: the named presets, how the command line's overrides lay over them, and how many
units one optimisation renders when no one says.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from precompute.optvis.errors import RenderError


@dataclass(frozen=True)
class Preset:
    """Render settings as data; every field can be overridden per call."""

    size: int  # side of the optimised image; resampled to the model's input size for each step
    steps: int
    lr: float = 0.05  # Lucent's default Adam step (render_vis), which the reference renders use
    param: str = "fourier"
    transforms: str = "standard"
    # For pooled objectives: the side of the random window of the model's input that each step evaluates,
    # as a fraction of the input's side; None or 1: the whole input (see the module docstring).
    window: float | None = None
    batch: int | None = None  # units per optimisation in render_units; None: by device (see auto_batch)

    def knobs(self) -> dict:
        """The settings that `render` takes, by name."""
        return {"size": self.size, "steps": self.steps, "lr": self.lr, "param": self.param,
                "transforms": self.transforms, "window": self.window}


PRESETS: dict[str, Preset] = {
    # The settings of shared/reference/lucent-efficientnet_lite0.png, our quality bar: Lucent's default
    # 128 px image (upsampled to the model's input) at 256 steps; pooled objectives see half-side windows.
    "quick": Preset(size=128, steps=256, window=0.5),
    # Issue 3's publication setting: the model's full input resolution, 8x the steps.
    "full": Preset(size=224, steps=2048),
}


# A window narrower than this many input pixels is not used: the whole view is shown instead. Each window is a
# fresh image edge where the layer's convolutions read zero padding, so a narrow window of a small input is mostly
# edge: on the planted Gabor bank (tests/planted.py, 64 px input, 9 px filters) the quick preset's 32 px windows
# reached 42% of the optimal grating's activation against 56% for the whole view. A small input is cheap to show
# whole. The bundled 224 px models keep their 112 px windows, with which issue 3's measures were made.
MIN_WINDOW_PX = 96


def effective_window(window: float | None, input_size: int) -> float | None:
    """The window the steps of a pooled objective really see: `window`, or None (the whole view) where its side
    would be under MIN_WINDOW_PX input pixels or it is the whole input anyway."""
    if not window or window >= 1 or round(window * input_size) < MIN_WINDOW_PX:
        return None
    return window


def check_window(window: float | None) -> None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window <= 1):
        raise RenderError(f"window must be a fraction of the input's side in (0, 1], got {window!r}")


def preset_settings(preset: str | Preset, overrides: dict) -> Preset:
    """A named (or given) preset with `overrides` laid over it, checked; RenderError on a bad name or value."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise RenderError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    unknown = set(overrides) - set(Preset.__dataclass_fields__)
    if unknown:
        raise RenderError(f"unknown render setting {sorted(unknown)[0]!r}; "
                          f"settings are {', '.join(Preset.__dataclass_fields__)}")
    settings = replace(preset, **overrides)
    check_window(settings.window)
    if settings.batch is not None and (not isinstance(settings.batch, int) or settings.batch <= 0):
        raise RenderError(f"batch must be a positive integer, got {settings.batch!r}")
    return settings


def auto_batch(device: torch.device, window: float | None = None) -> int:
    """Units per optimisation when none is asked for; `window`: the window the steps see (None: whole views).

    A CPU gains little from batching: for EfficientNet-Lite0 at 224 px a step costs about 1.4x less per
    image at a batch of 4 than at 1, and more again at 8, once a batch's activations no longer fit in
    cache. Through half-side windows a batch of 8 is as large in pixels as 2 whole views: on blocks.3, 16
    units took 18.1 s at a batch of 8 against 23.8 s at 4 (bench_render.py, idle 2-core CPU). A GPU is
    underused below dozens of images; 32 is a start that the out-of-memory halving corrects.
    """
    if device.type == "cuda":
        return 32
    return 8 if window and window <= 0.5 else 4
