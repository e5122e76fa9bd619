"""Feature visualisation: our batched renderer against Lucent's `render_vis`, side by side in one run.

Both render the same units of one layer of the bundled EfficientNet-Lite0 at the same image size (128 px
Fourier image, decorrelated colour, upsampled to 224) and the same number of Adam steps (lr 0.05). Lucent
renders one unit per `render_vis` call with its defaults otherwise; we render `--batch` units per
optimisation at the `quick` preset, whose steps show the model a random half-side window of its 224 px view
(`--window 1`: the whole view, as Lucent does). The two alternate chunk by chunk, so a load spike from other
processes on the machine hits both alike; both get a short untimed warm-up first. Both sets of final images are
scored by the same function (`render.achieved`: uint8 image, resized to 224, the model's own normalisation, the
unit's mean channel activation, original model).

Targets: at least 10x Lucent's units/s and a median achieved activation at least Lucent's.

    pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1 && pip install decorator ipython
    python benchmarks/bench_render.py [--layer blocks.3] [--units 16] [--steps 256] [--batch 8] [--window 1]

Lucent normalises every input with ImageNet's mean and std (its `transform.normalize`), not the model's;
`--lucent-norm model` gives it the model's normalisation instead (a fairer activation comparison).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.models import DEFAULT_MODEL, REGISTRY, build
from precompute.optvis import objectives
from precompute.optvis.presets import PRESETS, auto_batch
from precompute.optvis.render import achieved, render_units, retain_freed_memory, to_uint8


def lucent_render(model, layer: str, unit: int, steps: int, norm: str, mean, std) -> np.ndarray:
    from lucent.optvis import render, transform
    from torchvision.transforms import Normalize

    name = f"{layer.replace('.', '_')}:{unit}"  # Lucent joins module paths with "_"
    kwargs = dict(thresholds=(steps,), show_image=False, progress=False)
    if norm == "model":
        normal = Normalize(mean=list(mean), std=list(std))
        kwargs.update(preprocess=False, transforms=[*transform.standard_transforms, normal])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = render.render_vis(model, name, **kwargs)
    # Lucent 0.1.8 never removes the hook it puts on every module; left there, each call would run one more
    # hook per module than the last. Removing them after each call spares Lucent that slowdown.
    for module in model.modules():
        module._forward_hooks.clear()
    return images[-1][0]  # (128, 128, 3) float in [0, 1]


def grid(rows: list[np.ndarray], path: Path) -> None:
    from PIL import Image

    pad = 4
    h, w = rows[0][0].shape[:2]
    canvas = np.full((len(rows) * (h + pad), max(len(r) for r in rows) * (w + pad), 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            canvas[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", default="blocks.3")
    ap.add_argument("--units", type=int, default=16, help="how many units, spread evenly over the layer")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=None, help="units per optimisation (ours; default: by device)")
    ap.add_argument("--window", type=float, default=None, help="ours: window fraction (default: the quick preset's)")
    ap.add_argument("--round", type=int, default=8, help="units per turn when alternating ours and Lucent's "
                    "(at least the batch, or ours renders smaller batches)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lucent-norm", choices=["imagenet", "model"], default="imagenet")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's allocator as it is (by default both run with render.retain_freed_memory)")
    ap.add_argument("--grid", type=Path, default=None, help="save ours (top) and Lucent's (bottom) as a PNG")
    args = ap.parse_args()
    if args.size != 128:
        sys.exit("Lucent's default image is 128 px; compare at --size 128")

    # Process-wide, so Lucent runs under the same allocator setting as we do.
    retained = False if args.default_malloc else retain_freed_memory()
    spec = REGISTRY[DEFAULT_MODEL]
    model = build(spec, device="cpu")
    lucent_model = build(spec, device="cpu")  # Lucent hooks every module; keep that off the model we measure with
    window = args.window if args.window is not None else PRESETS["quick"].window
    count = spec.layer(args.layer).units
    units = [int(u) for u in np.linspace(0, count - 1, args.units).round()]
    # Warm-up, untimed: the first steps of a process pay for fresh memory pages and kernel set-up (seen here:
    # the first chunk ran up to 10x slower than the rest), which would be charged to whoever runs first.
    ours = dict(size=args.size, batch=args.batch, device="cpu",
                **({"window": args.window} if args.window is not None else {}))
    render_units(model, spec, args.layer, units[:args.round], steps=2, **ours)
    lucent_render(lucent_model, args.layer, units[0], 2, args.lucent_norm, spec.mean, spec.std)
    torch.manual_seed(args.seed)  # Lucent draws from the global generators
    np.random.seed(args.seed)

    ours_t = lucent_t = ours_cpu = lucent_cpu = 0.0
    ours_img, lucent_img = [], []
    for start in range(0, len(units), args.round):
        chunk = units[start:start + args.round]
        t0, c0 = time.perf_counter(), time.process_time()
        im, _ = render_units(model, spec, args.layer, chunk, steps=args.steps, seed=args.seed, **ours)
        ours_t += time.perf_counter() - t0
        ours_cpu += time.process_time() - c0
        ours_img.append(im)
        t0, c0 = time.perf_counter(), time.process_time()
        for u in chunk:
            lucent_img.append(lucent_render(lucent_model, args.layer, u, args.steps, args.lucent_norm,
                                            spec.mean, spec.std))
        lucent_t += time.perf_counter() - t0
        lucent_cpu += time.process_time() - c0
        print(f"  {start + len(chunk)}/{len(units)} units: ours {ours_t:.1f} s, Lucent {lucent_t:.1f} s", flush=True)

    ours_img = np.concatenate(ours_img)
    lucent_img = to_uint8(np.stack(lucent_img))
    objective = objectives.channels(args.layer, units)
    measure = dict(input_size=spec.input_size, mean=spec.mean, std=spec.std, device="cpu")
    ours_a = achieved(model, objective, ours_img, **measure)
    lucent_a = achieved(model, objective, lucent_img, **measure)

    ours_ups, lucent_ups = len(units) / ours_t, len(units) / lucent_t
    print(f"model {spec.id}, layer {args.layer}, {len(units)} units {units[0]}..{units[-1]}, {args.size} px image "
          f"upsampled to {spec.input_size}, {args.steps} steps, Adam lr 0.05, seed {args.seed}, "
          f"{torch.get_num_threads()} threads; ours batch {args.batch or auto_batch(torch.device('cpu'), window)}, "
          f"window {window}; Lucent one unit per call, "
          f"{args.lucent_norm} normalisation; freed memory retained (both): {retained}")
    print(f"units/s      ours {ours_ups:.3f}  Lucent {lucent_ups:.3f}  ratio {ours_ups / lucent_ups:.2f}x")
    # CPU seconds of this process: less sensitive than wall time to other processes competing for the cores.
    print(f"units/cpu-s  ours {len(units) / ours_cpu:.3f}  Lucent {len(units) / lucent_cpu:.3f}  "
          f"ratio {lucent_cpu / ours_cpu:.2f}x")
    print(f"activation   ours median {np.median(ours_a):.3f}  Lucent median {np.median(lucent_a):.3f}  "
          f"ratio {np.median(ours_a) / np.median(lucent_a):.2f}")
    print(f"per unit     ours>=Lucent on {int((ours_a >= lucent_a).sum())}/{len(units)} units")
    if args.grid:
        grid([list(ours_img), list(lucent_img)], args.grid)
        print(f"grid (ours top, Lucent bottom): {args.grid}")


if __name__ == "__main__":
    main()
