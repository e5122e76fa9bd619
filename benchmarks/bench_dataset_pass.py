"""The dataset pass (statistics and top-k for every unit of every layer) against a plain forward pass.

Both run in this process over the same images, with the same batching and the same image decoding on a
background thread; each is run twice and the faster time is kept. Target: a ratio of at most 1.5.

    python benchmarks/bench_dataset_pass.py [--images 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.dataset_pass import _batches, dataset_pass, normalise
from precompute.datasets import sample_dataset
from precompute.layers import geometry
from precompute.models import DEFAULT_MODEL, REGISTRY, build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    spec = REGISTRY[DEFAULT_MODEL]
    model = build(spec, device=args.device)
    dataset = sample_dataset()
    dataset.items = dataset.items[:: max(1, len(dataset) // args.images)][: args.images]
    layers = [layer.name for layer in spec.layers]
    probe = normalise([dataset.load(i, spec.input_size) for i in range(8)], spec.mean, spec.std)
    geo = geometry(model, spec, probe.to(args.device))

    def plain():
        with torch.inference_mode():
            for x, _ in _batches(dataset, spec.input_size, spec.mean, spec.std, args.batch_size):
                model(x.to(args.device))

    def ours():
        dataset_pass(model, spec, layers, geo, dataset, args.device, k=16, reservoir=20_000, seed=0,
                     batch_size=args.batch_size, progress=False)

    def best_of(fn, runs=2):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return min(times)

    plain()  # warm-up: allocator, kernels, photo decoding
    t_plain, t_ours = best_of(plain), best_of(ours)
    units = sum(layer.units for layer in spec.layers)
    print(f"{DEFAULT_MODEL}, {len(dataset)} images, {len(layers)} layers, {units} units, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"plain forward pass      {t_plain:7.2f} s  {len(dataset) / t_plain:6.1f} img/s")
    print(f"dataset pass (stats+k)  {t_ours:7.2f} s  {len(dataset) / t_ours:6.1f} img/s")
    print(f"ratio dataset pass / plain forward: {t_ours / t_plain:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
