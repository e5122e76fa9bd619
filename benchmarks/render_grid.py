"""Draws a grid of our renders for the units of ../shared/reference/lucent-efficientnet_lite0.png, to look at.

Rows are layers, columns units, at the reference's settings (128 px, 256 steps, seed 0) unless overridden.

    python benchmarks/render_grid.py --out /tmp/optvis/ours.png [--steps 256] [--param fourier]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.models import DEFAULT_MODEL, REGISTRY, build
from precompute.optvis.render import render_units


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--layers", default="blocks.1,blocks.3,blocks.5,conv_head")
    ap.add_argument("--units", default="0,5,10,20")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--param", default=None)
    ap.add_argument("--objective", default="channel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None)
    args = ap.parse_args()

    spec = REGISTRY[DEFAULT_MODEL]
    model = build(spec)
    layers, units = args.layers.split(","), [int(u) for u in args.units.split(",")]
    overrides = {k: v for k, v in dict(steps=args.steps, size=args.size, param=args.param, batch=args.batch).items()
                 if v is not None}
    rows = []
    for layer in layers:
        start = time.perf_counter()
        images, scores = render_units(model, spec, layer, units, preset=args.preset, objective=args.objective,
                                      seed=args.seed, **overrides)
        print(f"{layer}: {time.perf_counter() - start:.1f} s, achieved {np.round(scores, 2).tolist()}", flush=True)
        rows.append((layer, images, scores))

    side, label, pad = rows[0][1].shape[1], 90, 4
    canvas = Image.new("RGB", (label + len(units) * (side + pad), len(rows) * (side + 18 + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (layer, images, scores) in enumerate(rows):
        y = i * (side + 18 + pad)
        draw.text((4, y + side // 2), layer, fill="black")
        for j, (unit, im, score) in enumerate(zip(units, images, scores)):
            x = label + j * (side + pad)
            canvas.paste(Image.fromarray(im), (x, y))
            draw.text((x, y + side + 2), f"unit {unit}  {score:.2f}", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
