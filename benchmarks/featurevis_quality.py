"""Feature visualisation quality: does each unit's picture excite it more than its top dataset example?

Issue 3's bar: at the `full` preset, for at least 90% of rendered units of the bundled model, the picture beats
the unit's best dataset crop. Both sides use the same measure, the unit's spatial-max activation on the model
input (the statistic that `stats` keeps as `max` over the dataset), so the comparison does not favour the
picture's objective (the spatial mean). Units are spread evenly over each layer; dead units are left out (they
have nothing to beat). The store must hold `stats` of the model (`make demo` builds one). The picture is the
`channel` image (the layer gallery's thumbnail) or, with `--objective neuron`, the centre-position image.

    python benchmarks/featurevis_quality.py [--store data/microscope.duckdb] [--per-layer 4] [--preset full]
        [--steps N] [--size PX] [--window F] [--objective channel|neuron] [--layers blocks.1,blocks.3]
        [--device cpu] [--grid pictures.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_render import grid  # this folder is on the path when run as a script

from precompute.layers import with_layers
from precompute.models import DEFAULT_MODEL, build, resolve
from precompute.optvis import render as rd
from precompute.optvis.presets import PRESETS
from precompute.techniques.featurevis import settings
from store import config
from store.queries import Store


def spread(units: list[int], k: int) -> list[int]:
    """k units evenly spaced over the list (all of them when it is short)."""
    if len(units) <= k:
        return units
    return [units[i] for i in np.linspace(0, len(units) - 1, k).round().astype(int)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path(config.DEFAULT_STORE))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--per-layer", type=int, default=4)
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--window", type=float)
    ap.add_argument("--objective", default="channel", choices=["channel", "neuron"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid", type=Path, help="save the pictures as a PNG, one row per layer")
    args = ap.parse_args()

    store = Store(args.store)
    device = torch.device(args.device)
    spec = resolve(args.model)
    model = build(spec, pretrained=True, device=device)
    spec = with_layers(spec, model)
    names = ([layer.name for layer in spec.layers] if args.layers == "all"
             else [spec.layer(n).name for n in args.layers.split(",")])
    preset = settings({"preset": args.preset, "steps": args.steps, "size": args.size, "window": args.window})
    print(f"{spec.id}: {args.objective} objective, {preset.size} px, {preset.steps} steps, window {preset.window}, "
          f"{args.per_layer} units per layer, "
          f"{device}; picture's spatial max vs the top dataset example's")
    wins = total = 0
    rows = []
    started = time.time()
    for name in names:
        table = store.layer_units(spec.id, name)
        live = table[~table["dead"] & table["max"].notna()]
        if live.empty:
            print(f"{name:>12}: no stats in {args.store}; skipped")
            continue
        units = spread(live["unit"].astype(int).tolist(), args.per_layer)
        images, _ = rd.render_units(model, spec, name, units, preset=preset, objective=args.objective, seed=args.seed,
                                    device=device)
        acts = rd.activations(model, [name], images, input_size=spec.input_size, mean=spec.mean, std=spec.std,
                              device=device)[name]
        picture = acts[torch.arange(len(units)), torch.tensor(units)].amax(dim=(1, 2)).cpu().numpy()
        dataset = live.set_index("unit").loc[units, "max"].to_numpy()
        beat = picture > dataset
        rows.append(images)
        wins += int(beat.sum())
        total += len(units)
        ratios = " ".join(f"{u}:{p / d:.2f}" if d > 0 else f"{u}:{p:.2g}/{d:.2g}"
                          for u, p, d in zip(units, picture, dataset))
        print(f"{name:>12}: {beat.sum()}/{len(units)} beat the top example (picture/top: {ratios})", flush=True)
    print(f"overall: {wins}/{total} = {100 * wins / max(total, 1):.0f}% of units; {time.time() - started:.0f} s")
    store.close()
    if args.grid and rows:
        grid(rows, args.grid)
        print(f"pictures, one row per layer: {args.grid}")



if __name__ == "__main__":
    main()
