"""Issue 15: the default renderer against today's (before issue 15) and Lucent's, side by side in one run, on
the planted Gabor bank (tests/planted.py, known optimum) and on the bundled EfficientNet-Lite0.

- planted: the `channel` pictures' mean activation as a fraction of the optimal grating's (mean and worst
  unit), orientation hits (the picture's spectrum within 15 degrees of the filter's), units per second;
- bundled: the share of units whose picture's spatial max beats their top dataset example's (the store's
  `stats`, as benchmarks/featurevis_quality.py), units per second.

"Today's" is the same code with presets.MIN_WINDOW_PX set to 0: the quick preset's half-side windows even where
they are narrower than 96 input pixels, as before issue 15. Lucent is `render_vis` with its defaults and the
model's own normalisation, at the model's input size (`fixed_image_size`; without it Lucent upsamples a 64 px
model's input to 224 px). Lucent: `pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1`.

    python benchmarks/bench_planted.py [--store data/microscope.duckdb] [--layers blocks.1,blocks.3]
        [--per-layer 2] [--preset quick|full] [--no-lucent]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_render import grid  # noqa: E402
from featurevis_quality import spread  # noqa: E402

from precompute.models import DEFAULT_MODEL, REGISTRY, build  # noqa: E402
from precompute.optvis import objectives as O  # noqa: E402
from precompute.optvis import presets  # noqa: E402
from precompute.optvis import render as R  # noqa: E402
from store.queries import Store  # noqa: E402
from tests import planted as P  # noqa: E402


def lucent(model, layer: str, units: list[int], steps: int, input_size: int, mean, std) -> np.ndarray:
    from lucent.optvis import render, transform
    from torchvision.transforms import Normalize

    out = []
    for unit in units:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = render.render_vis(model, f"{layer.replace('.', '_')}:{unit}", thresholds=(steps,),
                                       show_image=False, progress=False, preprocess=False,
                                       fixed_image_size=input_size,
                                       transforms=[*transform.standard_transforms,
                                                   Normalize(mean=list(mean), std=list(std))])
        for module in model.modules():  # Lucent 0.1.8 leaves a hook on every module (see bench_render.py)
            module._forward_hooks.clear()
        out.append(images[-1][0])
    return R.to_uint8(np.stack(out))


def renderers(args):
    """(name, render(model, spec, layer, units) -> images) for each side of the comparison."""

    def ours(floor: int):
        def run(model, spec, layer, units):
            saved, presets.MIN_WINDOW_PX = presets.MIN_WINDOW_PX, floor
            try:
                return R.render_units(model, spec, layer, units, preset=args.preset, seed=args.seed)[0]
            finally:
                presets.MIN_WINDOW_PX = saved
        return run

    sides = [("default", ours(presets.MIN_WINDOW_PX)), ("today", ours(0))]
    if not args.no_lucent:
        steps = presets.PRESETS[args.preset].steps

        def run_lucent(model, spec, layer, units):
            torch.manual_seed(args.seed)
            return lucent(model, layer, units, steps, spec.input_size, spec.mean, spec.std)
        sides.append(("Lucent", run_lucent))
    return sides


def timed(fn, *a):
    start = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=ROOT / "data" / "microscope.duckdb")
    ap.add_argument("--layers", default="blocks.1,blocks.3")
    ap.add_argument("--per-layer", type=int, default=2)
    ap.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-lucent", action="store_true")
    ap.add_argument("--grid", type=Path, help="planted pictures, one row per renderer, as a PNG")
    args = ap.parse_args()
    sides = renderers(args)

    units = P.gabors()
    model = P.bank(units, opponents=False)
    spec = P.spec(len(units))
    best = P.optimum(model, units)
    planted, rows = {}, []
    for name, fn in sides:
        images, seconds = timed(fn, model, spec, P.LAYER, list(range(len(units))))
        got = R.achieved(model, O.channels(P.LAYER, list(range(len(units)))), images, input_size=P.INPUT,
                         mean=P.MEAN, std=P.STD) / best
        hits = sum(P.angle_error(P.spectrum_orientation(im), g.degrees) <= 15 for im, g in zip(images, units))
        planted[name] = (got.mean(), got.min(), hits, len(units) / seconds)
        rows.append(list(images))
        print(f"  planted {name}: {got.mean():.2f} of optimum (worst {got.min():.2f}), {hits}/8 orientations, "
              f"{seconds:.1f} s", flush=True)

    store = Store(args.store)
    bundled_spec = REGISTRY[DEFAULT_MODEL]
    bundled = build(bundled_spec)
    lucent_model = build(bundled_spec)  # Lucent hooks every module: keep that off the model we measure with
    chosen = {}
    for layer in args.layers.split(","):
        table = store.layer_units(bundled_spec.id, layer)
        live = table[~table["dead"] & table["max"].notna()]
        chosen[layer] = (spread(live["unit"].astype(int).tolist(), args.per_layer),
                         live.set_index("unit")["max"])
    store.close()
    scores = {}
    for name, fn in sides:
        wins = total = 0
        seconds = 0.0
        for layer, (layer_units, top) in chosen.items():
            images, s = timed(fn, lucent_model if name == "Lucent" else bundled, bundled_spec, layer, layer_units)
            seconds += s
            acts = R.activations(bundled, [layer], images, input_size=bundled_spec.input_size,
                                 mean=bundled_spec.mean, std=bundled_spec.std)[layer]
            picture = acts[torch.arange(len(layer_units)), torch.tensor(layer_units)].amax(dim=(1, 2)).numpy()
            wins += int((picture > top.loc[layer_units].to_numpy()).sum())
            total += len(layer_units)
        scores[name] = (wins, total, total / seconds)
        print(f"  bundled {name}: {wins}/{total} beat the top example, {seconds:.1f} s", flush=True)

    print(f"planted Gabor bank: 8 units (orientations 0-157.5 deg, wavelengths 4-10 px), {P.INPUT} px input; "
          f"bundled {bundled_spec.id} {args.layers}, {args.per_layer} units per layer; preset {args.preset}; "
          f"{torch.get_num_threads()} threads")
    print(f"{'':10s}{'planted: of optimum (mean / worst)':>36s}{'orientation':>13s}{'units/s':>9s}"
          f"{'bundled: beat top':>19s}{'units/s':>9s}")
    for name, _ in sides:
        mean, worst, hits, ups = planted[name]
        wins, total, bups = scores[name]
        print(f"{name:10s}{mean:>28.2f} / {worst:.2f}{hits:>11d}/8{ups:>9.3f}{wins:>14d}/{total:<4d}{bups:>9.3f}")
    if args.grid:
        grid(rows, args.grid)
        print(f"planted pictures, one row per renderer ({', '.join(n for n, _ in sides)}): {args.grid}")


if __name__ == "__main__":
    main()
