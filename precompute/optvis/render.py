"""The one optimisation loop: many units per optimisation, arrays out (it never shows or saves anything).

`render` optimises a batch of images against an objective; `render_units` renders many units of one layer
in chunks; `achieved` measures what any images (ours, Lucent's, photos) score on an objective, the same way
for all, so that renders can be compared with each other and with dataset activations.

Speed on CPUs, measured on EfficientNet-Lite0 (see benchmarks/bench_render.py):
- the forward pass stops after the deepest objective layer (`hooks.capture(stop_after_last=True)`);
- the model is rendered through a private copy with each BatchNorm folded into the convolution before it,
  checked against the original on the objective's layers, and in channels_last layout (`prepare`);
- all of Lucid's standard transforms and the resize to the model's input are one `grid_sample` per step;
- one batch holds many units (element i of a batch objective has its own unit), with one Adam for all:
  Adam's update is elementwise, so each element follows the same path as if rendered alone;
- for pooled objectives (a channel's mean, DeepDream, diversity; see `objectives`), the `quick` preset
  (`presets`) shows the model a random window of half its input's side at each step, not the whole view: a
  quarter of the pixels per step, and windows that move every step cover the whole image over the run. The
  images are still made for, and scored on, the whole view (`achieved`). Position-bound objectives
  (`neuron`, `caricature`) always see the whole view.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from precompute.hooks import capture, run
from precompute.layers import as_maps
from precompute.models import IMAGENET_MEAN, IMAGENET_STD, ModelError, ModelSpec
from precompute.optvis import objectives as obj
from precompute.optvis import param as param_mod
from precompute.optvis import rng
from precompute.optvis import transforms as tf
from precompute.optvis.errors import RenderError
from precompute.optvis.prepare import frozen_eval, match_layout, prepare
from precompute.optvis.presets import Preset, auto_batch, check_window, effective_window, preset_settings

# Element keys of a unit's further copies (render_units' `copies`): unit + c * stride, never another unit's key.
COPY_KEY_STRIDE = 1 << 20


def render(
    model: nn.Module,
    objective: obj.Objective,
    layers: Sequence[str] | None = None,
    *,
    batch: int | None = None,
    size: int = 128,
    steps: int = 256,
    lr: float = 0.05,
    param: str = "fourier",
    transforms: str | Sequence[tf.Transform] = "standard",
    window: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    keys: Sequence[int] | None = None,
    optimise_model: bool = True,
    step_callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Optimises `batch` images to maximise `objective`; returns (uint8 images [B, size, size, 3], achieved [B]).

    `achieved[i]` is the objective's score for element i on its final image, as stored (uint8), resized to
    `input_size` without any random transform: for a channel objective, the unit's mean activation.
    `keys` name the batch elements for seeding (default 0..B-1): element i's start and transforms come from
    (seed, keys[i]), so an element renders the same in any batch. `model` must live on `device`; it is not
    modified (rendering uses a private, optimised copy unless `optimise_model` is False).
    `step_callback(step, scores)` is called after every step (progress bars, tests). With `window` (0 < w <= 1)
    and a pooled objective, each step shows the model a random window of side w * `input_size` of its view
    (`scores` are then the window's); other objectives ignore it.

    Deterministic for a seed on a CPU. On CUDA, `grid_sample`'s backward accumulates with atomic adds, so
    two runs agree only to float rounding, and autocast (bf16, else fp16) runs the model.
    """
    device = torch.device(device)
    layers = _check_layers(model, objective, layers)
    batch = _check_batch(objective, batch)
    keys = list(range(batch)) if keys is None else [int(k) for k in keys]
    if len(keys) != batch:
        raise RenderError(f"got {len(keys)} element keys for a batch of {batch}")
    settings = _Settings(size, steps, lr, param, _transforms(transforms), window, seed, device, input_size,
                         tuple(mean), tuple(std))
    settings.check()
    _check_device(model, device)
    work = prepare(model, layers, device, input_size) if optimise_model else model
    if objective.pooled:
        settings = dataclasses.replace(settings, window=usable_window(work, layers, window, input_size, device))
    try:
        with frozen_eval(work):
            images = _render_fitting(work, objective, layers, keys, settings, step_callback)
            scores = achieved(work, objective, images, input_size=input_size, mean=mean, std=std, device=device)
    except obj.ObjectiveError as exc:  # unit out of range, wrong target shape: the user's input, said once
        raise RenderError(str(exc)) from exc
    return images, scores


def render_units(
    model: nn.Module,
    spec: ModelSpec,
    layer: str,
    units: Sequence[int],
    *,
    preset: str | Preset = "quick",
    objective: str = "channel",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    copies: int = 1,
    **overrides,
) -> tuple[np.ndarray, np.ndarray]:
    """Renders many units of one layer, `batch` units per optimisation; returns (images, achieved) in unit order.

    `objective` is "channel", "neuron" or "negative". `overrides` replace preset fields (size, steps, lr,
    param, transforms, batch). Each unit is seeded by (seed, unit), so its picture does not depend on the
    chunk it falls in. `progress(n)` is called with the number of units finished after each chunk.
    With `copies` k > 1, each unit is rendered k times from k independent starts and transform streams (its
    copy c is seeded by (seed, unit + c * COPY_KEY_STRIDE), so copy 0 is the picture a single render gives), in
    the same optimisations (a chunk holds `batch` images, so batch // k units); images and achieved are then
    (k, units, ...): the trust signals' second seed at the price of more images per step, not more steps.
    """
    if not isinstance(copies, int) or copies < 1:
        raise RenderError(f"copies must be a positive integer, got {copies!r}")
    settings = preset_settings(preset, overrides)
    makers = {"channel": obj.channels, "neuron": obj.neurons, "negative": lambda name, u: obj.negative(name, list(u))}
    if objective not in makers:
        raise RenderError(f"unknown objective {objective!r}; use one of {', '.join(makers)}")
    try:
        info = spec.layer(layer)
    except ModelError as exc:
        raise RenderError(str(exc)) from exc
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < info.units]
    if bad:
        raise RenderError(f"unit {bad[0]} is out of range for layer {info.name!r}, "
                          f"which has {info.units} units (0..{info.units - 1})")
    if not units:
        empty = np.zeros((0, settings.size, settings.size, 3), np.uint8), np.zeros(0, np.float32)
        return empty if copies == 1 else (empty[0][None].repeat(copies, 0), empty[1][None].repeat(copies, 0))
    if max(units) >= COPY_KEY_STRIDE:
        raise RenderError(f"units beyond {COPY_KEY_STRIDE - 1} cannot be seeded apart from their copies")
    device = torch.device(device)
    _check_device(model, device)
    work = prepare(model, [info.name], device, spec.input_size)
    pooled = makers[objective](info.name, units[:1]).pooled
    window = usable_window(work, [info.name], settings.window, spec.input_size, device) if pooled else None
    chunk_size = max(1, (settings.batch or auto_batch(device, window)) // copies)
    images, scores, done = [], [], 0
    for start in range(0, len(units), chunk_size):
        chunk = units[start:start + chunk_size]
        targets = chunk * copies
        keys = [u + c * COPY_KEY_STRIDE for c in range(copies) for u in chunk]
        im, sc = render(work, makers[objective](info.name, targets), [info.name], **settings.knobs(),
                        seed=seed, device=device, input_size=spec.input_size, mean=spec.mean, std=spec.std,
                        keys=keys, optimise_model=False)
        images.append(im.reshape(copies, len(chunk), *im.shape[1:]))
        scores.append(sc.reshape(copies, len(chunk)))
        done += len(chunk)
        if progress:
            progress(done)
    images, scores = np.concatenate(images, axis=1), np.concatenate(scores, axis=1)
    return (images[0], scores[0]) if copies == 1 else (images, scores)


def activations(model: nn.Module, layers: Sequence[str], images: np.ndarray | torch.Tensor, *, input_size: int,
                mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu",
                chunk: int = 32) -> dict[str, torch.Tensor]:
    """Layer activations (B, C, H, W), float32 on `device`, for images resized to `input_size` as `render` does.

    `images` are uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1]. Use it for caricature targets.
    """
    x = _as_batch(images)
    layers = list(dict.fromkeys(layers))
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with torch.no_grad(), frozen_eval(model), capture(model, layers) as captured:
        for start in range(0, x.shape[0], chunk):
            part = model_input(x[start:start + chunk], input_size=input_size, mean=mean, std=std, device=device)
            got = run(model, match_layout(part, model), captured)
            for name in layers:
                out[name].append(as_maps(got[name]).float())
    return {name: torch.cat(parts) for name, parts in out.items()}


def model_input(images: np.ndarray | torch.Tensor, *, input_size: int, mean: Sequence[float], std: Sequence[float],
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Images (as `activations` takes them) resized to `input_size` and normalised, as every render step sees
    them: (B, 3, input_size, input_size) on `device`."""
    device = torch.device(device)
    m, s = _norm(mean, std, device)
    part = tf.compose([tf.resize(input_size)])(_as_batch(images).to(device), torch.Generator())
    return (part - m) / s


def achieved(model: nn.Module, objective: obj.Objective, images: np.ndarray | torch.Tensor, *, input_size: int,
             mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu") -> np.ndarray:
    """The objective's score per image, measured without transforms (float32, no autocast)."""
    acts = activations(model, objective.layers, images, input_size=input_size, mean=mean, std=std, device=device)
    with torch.no_grad():
        return objective(acts).float().cpu().numpy()


def retain_freed_memory() -> bool:
    """Asks glibc to keep freed memory for reuse rather than hand it back to the OS. Process-wide: the
    caller (a CLI, a benchmark) decides; `render` never calls it. Returns False where libc is not glibc.

    Every step allocates and frees the same activations (tens of MB). By default glibc serves large blocks
    with fresh mmap'd pages and trims its heap, so every step page-faults its memory in again. On the 2-core
    VM this was measured on, in back-to-back runs, it made our steps 1.1x to 1.8x faster (EfficientNet-Lite0
    to blocks.3, batch 4) and Lucent's about 1.05x; the VM's own speed drifted as much between minutes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    # A 1 GiB mmap threshold keeps even a large batch's activations on the heap.
    return all(libc.mallopt(option, value) == 1 for option, value in
               [(m_mmap_threshold, 1 << 30), (m_trim_threshold, 1 << 30), (m_top_pad, 256 << 20)])


@dataclass(frozen=True)
class _Settings:
    size: int
    steps: int
    lr: float
    param: str
    transforms: tuple
    window: float | None
    seed: int
    device: torch.device
    input_size: int
    mean: tuple
    std: tuple

    def check(self) -> None:
        if not isinstance(self.steps, int) or self.steps <= 0:
            raise RenderError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.size, int) or self.size < 8:
            raise RenderError(f"size must be an integer of at least 8 pixels, got {self.size!r}")
        if not isinstance(self.input_size, int) or self.input_size < 8:
            raise RenderError(f"input_size must be an integer of at least 8 pixels, got {self.input_size!r}")
        if not self.lr > 0:
            raise RenderError(f"lr must be positive, got {self.lr!r}")
        check_window(self.window)
        if self.param not in param_mod.PARAMS:
            raise RenderError(f"unknown parameterisation {self.param!r}; use one of {', '.join(param_mod.PARAMS)}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise RenderError(f"seed must be a non-negative integer, got {self.seed!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise RenderError("mean and std must have 3 entries each, with std > 0")


def _render_fitting(model, objective, layers, keys, settings, step_callback) -> np.ndarray:
    """Renders the batch; on a CUDA out-of-memory error, halves it (at coupled-block boundaries) and retries."""
    try:
        return _optimise(model, objective, layers, keys, settings, step_callback)
    except torch.cuda.OutOfMemoryError as exc:
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
        batch = len(keys)
        block = objective.block if objective.block > 0 else batch
        half = math.ceil(batch / 2 / block) * block
        if half >= batch:
            raise RenderError(f"out of GPU memory rendering {batch} image(s) at {settings.size} px "
                              f"(the objective couples {block} elements, the smallest batch it allows)") from exc
        parts = [(0, half), (half, batch)]
        return np.concatenate([
            _render_fitting(model, _restrict(objective, s, e, batch), layers, keys[s:e], settings, step_callback)
            for s, e in parts])


def _restrict(objective: obj.Objective, start: int, stop: int, batch: int) -> obj.Objective:
    return objective if (start, stop) == (0, batch) else objective.select(start, stop)


def _optimise(model, objective, layers, keys, settings, step_callback) -> np.ndarray:
    s = settings
    batch = len(keys)
    gens = rng.element_generators(s.seed, keys)
    params, image_fn = param_mod.PARAMS[s.param](batch, s.size, gens, s.device)
    optimiser = torch.optim.Adam(params, lr=s.lr)
    to_input = tf.compose([*s.transforms, tf.resize(s.input_size), *_window(objective, s)])
    m, sd = _norm(s.mean, s.std, s.device)
    autocast, scaler = _mixed_precision(s.device)
    with capture(model, list(layers)) as captured:
        for step in range(s.steps):
            optimiser.zero_grad(set_to_none=True)
            x = match_layout((to_input(image_fn(), gens) - m) / sd, model)
            with autocast():
                got = run(model, x, captured)
            scores = objective({name: as_maps(got[name]) for name in layers})
            loss = -scores.float().sum()
            if scaler is None:
                loss.backward()
                optimiser.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
            if step_callback:
                step_callback(step, scores.detach())
    with torch.no_grad():
        final = image_fn().detach().permute(0, 2, 3, 1).float().cpu().numpy()
    return to_uint8(final)


def usable_window(model: nn.Module, layers: Sequence[str], window: float | None, input_size: int,
                  device: torch.device) -> float | None:
    """`window` where the model runs on a window of its input up to `layers`; None (the whole view) where the
    window is narrower than `presets.MIN_WINDOW_PX`, or for a model that takes only its own input size up to
    there (ViT and Mixer check the image's size or add position embeddings made for it; LeViT's attention biases
    are), so that such models render as others do, without windows."""
    window = effective_window(window, input_size)
    if window is None:
        return None
    side = max(1, round(window * input_size))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    probe = match_layout(torch.zeros(1, 3, side, side, device=device, dtype=dtype), model)
    try:
        with torch.no_grad(), capture(model, list(layers)) as captured:
            run(model, probe, captured)
    except Exception:  # noqa: BLE001 - whatever the model raises on a smaller input means: no windows for it
        return None
    return window


def _window(objective: obj.Objective, s: _Settings) -> list[tf.Warp]:
    """The random window warp for a pooled objective when the settings ask for one smaller than the input."""
    side = max(1, round(s.window * s.input_size)) if s.window else s.input_size
    return [tf.window(side)] if objective.pooled and side < s.input_size else []


def _mixed_precision(device: torch.device):
    """bf16 autocast on CUDA where supported (no loss scaling needed), else fp16 with a gradient scaler.

    On CPU everything stays float32: without native bf16 units autocast there only adds conversions.
    """
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (B, H, W, 3) to uint8, rounding to nearest."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def _as_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise RenderError(f"images must be (B, H, W, 3), got {images.shape}")
        x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # a copy: the caller's array may be read-only
        return x.float() / 255 if images.dtype == np.uint8 else x.float()
    if images.ndim != 4 or images.shape[1] != 3:
        raise RenderError(f"image tensors must be (B, 3, H, W), got {tuple(images.shape)}")
    return images.float()


def _norm(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, 3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).reshape(1, 3, 1, 1))


def _check_layers(model: nn.Module, objective: obj.Objective, layers: Sequence[str] | None) -> list[str]:
    if not isinstance(objective, obj.Objective):
        raise RenderError("objective must be an Objective (see precompute.optvis.objectives), "
                          f"got {type(objective).__name__}")
    wanted = list(dict.fromkeys([*(layers or ()), *objective.layers]))
    modules = dict(model.named_modules())
    for name in wanted:
        if name not in modules:
            near = [n for n in modules if n and (n.startswith(name) or name.startswith(n))][:5]
            hint = f"; did you mean one of {', '.join(near)}?" if near else ""
            raise RenderError(f"the model has no layer {name!r}{hint}")
    return wanted


def _check_batch(objective: obj.Objective, batch: int | None) -> int:
    if batch is None:
        batch = objective.batch if objective.batch is not None else 1
    if not isinstance(batch, int) or batch <= 0:
        raise RenderError(f"batch must be a positive integer, got {batch!r}")
    if objective.batch is not None and objective.batch != batch:
        raise RenderError(f"the objective describes {objective.batch} batch elements, batch is {batch}")
    return batch


def _check_device(model: nn.Module, device: torch.device) -> None:
    p = next(model.parameters(), None)
    if p is not None and p.device.type != device.type:
        raise RenderError(f"the model is on {p.device}, rendering was asked on {device}; build it on {device}")


def _transforms(transforms: str | Sequence[tf.Transform]) -> tuple:
    if isinstance(transforms, str):
        if transforms not in tf.TRANSFORMS:
            raise RenderError(f"unknown transform set {transforms!r}; use one of {', '.join(tf.TRANSFORMS)}")
        return tuple(tf.TRANSFORMS[transforms])
    return tuple(transforms)
