"""Tuning curves: the stimulus pass with recording (every layer's centre and spatial-max responses) against a
plain forward pass over the same stimuli, then the time to compute every tuning curve of the bundled model.

Each batch of stimuli (store.stimuli at the model's input size, normalised) goes through the plain
model and then through the recording pass, alternately, so that load from other processes on a shared
machine hits both alike; the sums are compared. Rendering is timed on its own. Target: a ratio <= 1.3.

    python benchmarks/bench_tuning.py [--device cpu] [--batch-size 32] [--no-full]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.hooks import capture
from precompute.models import DEFAULT_MODEL, REGISTRY, build
from precompute.techniques import tuning
from store.stimuli import FAMILIES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-full", action="store_true", help="skip the full precompute of every tuning curve")
    args = ap.parse_args()

    spec = REGISTRY[DEFAULT_MODEL]
    device = torch.device(args.device)
    model = build(spec, device=device)
    layers = [layer.name for layer in spec.layers]
    size = spec.input_size
    n = sum(int(np.prod(f.shape(size))) for f in FAMILIES.values())

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, result

    with torch.inference_mode():
        model(next(tuning.batches(FAMILIES["gratings"], size, spec.mean, spec.std, 8)).to(device))  # warm-up
        t_render = t_plain = t_ours = 0.0
        for family in FAMILIES.values():
            stream = tuning.batches(family, size, spec.mean, spec.std, args.batch_size)
            while True:
                dt, x = timed(lambda: next(stream, None))
                if x is None:
                    break
                t_render += dt
                x = x.to(device)
                t_plain += timed(lambda: model(x))[0]
                with capture(model, layers) as outputs:
                    t_ours += timed(lambda: tuning.record(model, x, outputs))[0]
    units = sum(layer.units for layer in spec.layers)
    print(f"{DEFAULT_MODEL}, {n} stimuli "
          f"({', '.join(f'{k} {int(np.prod(f.shape(size)))}' for k, f in FAMILIES.items())}),"
          f" {len(layers)} layers, {units} units, device {device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size}")
    print(f"rendering + normalising  {t_render:7.2f} s  {n / t_render:7.1f} stimuli/s")
    print(f"plain forward pass       {t_plain:7.2f} s  {n / t_plain:7.1f} stimuli/s")
    print(f"recording pass           {t_ours:7.2f} s  {n / t_ours:7.1f} stimuli/s  (all {len(layers)} layers: "
          "centre and spatial max)")
    print(f"ratio recording / plain forward: {t_ours / t_plain:.2f}x (target <= 1.3x); "
          f"with rendering {(t_ours + t_render) / (t_plain + t_render):.2f}x")
    if args.no_full:
        return

    from precompute.pipeline import precompute
    from precompute.request import Request

    with tempfile.TemporaryDirectory() as tmp:
        wall, summary = timed(lambda: precompute(Request(
            model=DEFAULT_MODEL, store=Path(tmp) / "s.duckdb", techniques="tuning", device=args.device,
            batch_size=args.batch_size, max_images=8, progress=False)))
    print(f"all tuning curves of {DEFAULT_MODEL} ({summary['ran']} jobs, {summary['store']['tuning']} rows): "
          f"{summary['seconds']:.1f} s for the jobs (stimulus pass, summaries, shards), {wall:.1f} s with model "
          "load, geometry probe and ingest")


if __name__ == "__main__":
    main()
