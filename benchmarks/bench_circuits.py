"""Circuits: the time to compute every unit's neighbours (all layer pairs the technique computes: each layer
from the HOPS layers before it) of the bundled EfficientNet-Lite0 and of ResNet-50 with random weights, set
against one plain forward pass of the same model; and the unit page's server-side time with the circuit lens
open (target under 300 ms), against the dataset lens on the same store.

Wall time on a shared machine moves with its load; process CPU time is printed beside it.

    python benchmarks/bench_circuits.py [--store data/microscope.duckdb] [--models bundled,resnet50] [--hops 2]
                                        [--compare]  # also on the whole map (no crop): CPU ratio, differences
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from store import config  # noqa: E402 - importable once the root is on the path


def pairs(names: list[str], hops: int) -> list[tuple[str, str]]:
    return [(names[i - h], names[i]) for i in range(len(names)) for h in range(1, hops + 1) if i - h >= 0]


def compute_all(model_ref: str, hops: int, compare: bool) -> None:
    import torch

    from precompute.layers import with_layers
    from precompute.linear_paths import CircuitError, expanded_weights
    from precompute.models import build, resolve

    device = torch.device("cpu")
    if model_ref == "resnet50":
        import timm

        from precompute.models import REGISTRY

        spec = REGISTRY["resnet50.tv_in1k"]
        # timm zero-initialises each bottleneck's last batch-norm scale, which would leave only the shortcuts:
        # every kernel 1x1 and nothing to time. Random weights all the way through give real receptive fields.
        model = timm.create_model("resnet50", pretrained=False, zero_init_last=False).eval()
    else:
        spec = resolve("efficientnet_lite0.bundled")
        model = build(spec, pretrained=True, device=device)
    spec = with_layers(spec, model)
    names = [layer.name for layer in spec.layers]
    x = torch.zeros(1, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(3):
            model(x)
        forward_ms = (time.perf_counter() - start) / 3 * 1000
    name = spec.id if model_ref != "resnet50" else "resnet50 (random weights)"
    # Per route: wall and process CPU seconds (CPU time is the fairer clock on a loaded machine).
    totals = {route: [0.0, 0.0] for route in (("crop", "whole map") if compare else ("crop",))}
    units, worst = 0, 0.0
    for source, target in pairs(names, hops):
        try:
            line, results = "", {}
            for route in totals:
                wall, cpu = time.perf_counter(), time.process_time()
                results[route] = expanded_weights(model, source, target, spec.input_size, device,
                                                  crop=route == "crop")
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                totals[route][0] += wall
                totals[route][1] += cpu
                line += f" {route}: CPU {cpu:6.1f} s wall {wall:6.1f} s"
            pair = results["crop"]
            units += len(pair.units)
            if compare:
                other = results["whole map"]
                diff = max(float(abs(pair.kernels - other.kernels).max()),
                           float(abs(pair.weights - other.weights).max()))
                worst = max(worst, diff / max(float(abs(other.weights).max()), 1e-30))
                line += f" | max diff {diff:.1e}"
            crop = f"{pair.crop[2]}x{pair.crop[3]}" if pair.crop else "none"
            print(f"  {source:>10s} -> {target:<10s} {pair.weights.shape[0]:5d} x {pair.weights.shape[1]:<5d} "
                  f"kernel {pair.support[0]:>2d}x{pair.support[1]:<2d} of {pair.source_map[0]:>3d}x"
                  f"{pair.source_map[1]:<3d} crop {crop:>5s}{line}", flush=True)
        except CircuitError as exc:
            print(f"  {source:>10s} -> {target:<10s} {exc}")
    for route, (wall, cpu) in totals.items():
        print(f"{name}, {route}: {len(pairs(names, hops))} layer pairs, {units} unit rows: CPU {cpu:.1f} s, "
              f"wall {wall:.1f} s; one forward pass {forward_ms:.0f} ms")
    if compare:
        (_, crop_cpu), (_, whole_cpu) = totals.values()
        print(f"{name}: whole map / crop CPU time {whole_cpu / crop_cpu:.2f}; largest difference relative to the "
              f"largest weight {worst:.1e}")


def page_times(store: str, runs: int) -> None:
    os.environ["MICROSCOPE_STORE"] = str(Path(store).resolve())
    from bench_pages import build

    from store.queries import Store

    s = Store(store)
    model = next(m["model_id"] for m in s.models() if s.circuit_paths(m["model_id"], "blocks.3"))
    build("models", {})  # warm-up: imports, store connection
    rows = {}
    for view in ("circuits", "dataset"):
        rows[f"unit page, {view} lens"] = [build("unit", {"model": model, "layer": "blocks.3", "unit": u, "view": view})
                      for u in range(1, runs + 1)]
    rows["unit page, circuits lens, revisit"] = [
        build("unit", {"model": model, "layer": "blocks.3", "unit": 1, "view": "circuits"}) for _ in range(runs)]
    rows["layer page with weight matrix"] = [build("layer", {"model": model, "layer": "conv_head"})
                                             for _ in range(runs)]
    for name, times in rows.items():
        print(f"{name:36s} median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms")
    circuits = statistics.median(rows["unit page, circuits lens"])
    dataset = statistics.median(rows["unit page, dataset lens"])
    print(f"circuit lens first visit / dataset lens: {circuits / dataset:.2f}; "
          f"/ 300 ms target: {circuits / 300:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=config.DEFAULT_STORE, help="a store with circuits of the bundled model")
    ap.add_argument("--models", default="bundled,resnet50")
    ap.add_argument("--hops", type=int, default=None, help="layers back (default: the technique's HOPS)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--compare", action="store_true", help="also compute every pair on the whole source map "
                    "(no crop): time ratio and largest difference")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from precompute.techniques.circuits import HOPS

    for ref in [m for m in args.models.split(",") if m]:
        compute_all(ref, args.hops or HOPS, args.compare)
    if Path(args.store).is_file():
        page_times(args.store, args.runs)
    else:
        print(f"no store at {args.store}: page times skipped")


if __name__ == "__main__":
    main()
