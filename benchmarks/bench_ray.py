"""Precompute on Ray: jobs per second with 1 and with 2 Ray workers on this machine, and the ingest rate.

Scaling: the same request (the bundled EfficientNet-Lite0, every layer, stats and dataset examples over the
first --max-images sample crops) runs on a local Ray cluster of 1 CPU, then of 2 CPUs, each into a fresh
work folder. Each worker is warmed up first (torch and the pipeline imported), so the time counts the jobs:
building the model in each worker, the per-layer dataset passes and writing the shards, not interpreter
start-up; ingest is left out. Ray gives each task one CPU and one torch thread. The ratio is the speed-up.

Ingest: a synthetic factory model with --units units (or a few more) in 3 layers gets stats and dataset examples (k=16)
from the local executor, then `ingest` builds the store from those shards, timed alone (best of 2).

    python benchmarks/bench_ray.py [--max-images 96] [--units 12000] [--no-scaling] [--no-ingest]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.models import DEFAULT_MODEL, Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from store import workdir
from store.ingest import ingest

WIDE_FACTORY = '''
import torch
from torch import nn


def build(width={width}):
    # Grouped convolutions: many units, little arithmetic, so that the shards are quick to make.
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 4, stride=4), nn.ReLU(),
        nn.Conv2d(width, width, 1, groups=width), nn.ReLU(),
        nn.Conv2d(width, width, 2, stride=2, groups=width),
    )
'''


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, every process: on a shared machine other work takes cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _warm(n: int) -> None:
    import ray

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import precompute.runner  # noqa: F401 - torch, timm and the techniques, as a job imports them

        time.sleep(1)  # hold the CPU so that the n tasks land on n distinct workers
        return os.getpid()

    pids = set(ray.get([warm.remote() for _ in range(n)]))
    assert len(pids) == n, pids


def scaling(max_images: int, root: Path) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rates = {}
    for workers in (1, 2):
        ray_tmp = tempfile.mkdtemp(prefix="rayb", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        ray.init(address="local", num_cpus=workers, _temp_dir=ray_tmp, include_dashboard=False,
                 log_to_driver=False)
        try:
            _warm(workers)
            store = root / f"scaling-{workers}" / "s.duckdb"
            started, ticks = time.perf_counter(), _cpu_ticks()
            summary = precompute(Request(model=DEFAULT_MODEL, store=store, techniques="stats,dataset",
                                         max_images=max_images, executor="ray", progress=False))
            assert not summary["failed"], summary["failed"]
            # summary["seconds"] is the executor's run alone (planning and ingest excluded)
            seconds = summary["seconds"]
            busy = [b - a for a, b in zip(ticks, _cpu_ticks())]
            rates[workers] = summary["ran"] / seconds
            print(f"{workers} Ray worker(s): {summary['ran']} jobs in {seconds:.1f} s = {rates[workers]:.3f} jobs/s "
                  f"(whole call with planning and ingest: {time.perf_counter() - started:.1f} s; machine CPU busy "
                  f"{busy[0] / busy[1]:.0%} of {os.cpu_count()} cores, all processes)", flush=True)
        finally:
            ray.shutdown()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"scaling 1 -> 2 workers: {rates[2] / rates[1]:.2f}x jobs per second (ideal 2.00x; {os.cpu_count()} CPUs, "
          f"load average now {os.getloadavg()[0]:.1f})")


def ingest_rate(units: int, root: Path) -> None:
    factory = root / "wide_model.py"
    factory.write_text(WIDE_FACTORY.format(width=-(-units // 3)))
    store = root / "ingest" / "s.duckdb"
    started = time.perf_counter()
    summary = precompute(Request(model=f"{factory}:build", store=store, techniques="stats,dataset", max_images=64,
                                 batch_size=16, progress=False, overrides=Overrides(name="wide", input_size=64)))
    print(f"shards for {units} units: {summary['jobs']} jobs in {time.perf_counter() - started:.1f} s")
    best = None
    for _ in range(2):
        started = time.perf_counter()
        counts = ingest(workdir.default_for(store), store, progress=False)
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    assert counts["unit_stats"] >= units, counts
    print(f"ingest: {counts['unit_stats']} units ({counts['dataset_examples']} example rows, {counts['thumbnails']} "
          f"thumbnails, {counts['runs']} shards) in {best:.2f} s = {counts['unit_stats'] / best:,.0f} units/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-images", type=int, default=96, help="dataset crops per pass in the scaling run")
    ap.add_argument("--units", type=int, default=12000, help="units in the ingest run's store (at least 10,000)")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-ingest", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        if not args.no_scaling:
            scaling(args.max_images, root)
        if not args.no_ingest:
            ingest_rate(args.units, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
