"""The relation techniques against the dataset pass they ride on, for the bundled EfficientNet-Lite0 with every
layer, on the same request (the sample dataset, cut to --images): the pass as `stats` and `dataset` run it,
then what `classes` adds: the pass run to the model's output for the predictions (its extra time over the
plain pass), and the class votes of every layer with the technique's rows (`classes.class_tables`, the votes
computed once per layer and cut per job, as the runner does); and what `similar` costs: its rows from the pass
(every job's `from_pass`) and the neighbours and layer CKA that ingest derives from them
(`store.similarity.derive`, into a DuckDB store of the schema). Target (issue 11): `similar` and `classes`
together under half of the dataset pass. Each is run twice, interleaved, after a warm-up; the faster is kept.

Wall time on a shared machine moves with its load; process CPU time is printed beside it.

    python benchmarks/bench_relations.py [--images 512] [--device cpu]  # --images 2186: the whole sample
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute.dataset_pass import dataset_pass, normalise
from precompute.datasets import sample_dataset
from precompute.layers import geometry
from precompute.models import DEFAULT_MODEL, REGISTRY, build
from precompute.request import Request
from precompute.runner import Context
from precompute.techniques import classes, similar
from store import similarity
from store.ingest import schema_sql


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512, help="dataset images (0: the whole sample, as the demo)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--k", type=int, default=16)
    args = ap.parse_args()

    device = torch.device(args.device)
    spec = REGISTRY[DEFAULT_MODEL]
    model = build(spec, device=device)
    dataset = sample_dataset()
    if args.images:
        dataset.items = dataset.items[:: max(1, len(dataset) // args.images)][: args.images]
    layers = [layer.name for layer in spec.layers]
    geo = geometry(model, spec, normalise([dataset.load(i, spec.input_size) for i in range(8)], spec.mean,
                                          spec.std).to(device))

    def run_pass(predictions: bool):
        return dataset_pass(model, spec, layers, geo, dataset, device, k=args.k, reservoir=20_000, seed=0,
                            batch_size=args.batch_size, progress=False, predictions=predictions)

    print(f"{spec.id}, {len(layers)} layers, {len(dataset)} images at {spec.input_size} px, {args.device}, "
          f"{torch.get_num_threads()} threads")
    items = dataset.items
    dataset.items = items[:64]
    records = run_pass(True)  # warm-up: allocator, kernels, photo decoding; and what the votes' rows cut from
    dataset.items = items
    technique = classes.TECHNIQUE
    jobs = technique.plan(spec.id, {layer.name: list(range(layer.units)) for layer in spec.layers}, {})

    def votes_and_rows():
        ctx = Context(model, spec, geo, dataset, device, Request(model=spec.id, store=Path("unused")), layers)
        return [classes.class_tables(ctx, job, records[job.layer]) for job in jobs]

    sampled = similar.TECHNIQUE
    sample_jobs = sampled.plan(spec.id, {layer.name: list(range(layer.units)) for layer in spec.layers}, {})

    def responses_and_neighbours():
        ctx = Context(model, spec, geo, dataset, device, Request(model=spec.id, store=Path("unused")), layers)
        con = duckdb.connect()
        con.execute(schema_sql())
        for position, layer in enumerate(spec.layers):
            g = geo[layer.name]
            con.execute("INSERT INTO layers VALUES (?, ?, ?, NULL, ?, ?, ?, ?)",
                        [spec.id, layer.name, position, layer.units, g.height, g.width, g.rf_px])
        for job in sample_jobs:
            for table, rows in sampled.from_pass(ctx, job, records[job.layer]).items():
                con.register("rows", rows)
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM rows")
                con.unregister("rows")
        similarity.derive(con)
        return con.execute("SELECT count(*) FROM similar_units").fetchone()[0]

    runs = {"pass": [], "pred": [], "votes": [], "similar": []}
    for _ in range(2):
        runs["pass"].append(timed(lambda: run_pass(False)))
        runs["pred"].append(timed(lambda: run_pass(True)))
        runs["votes"].append(timed(votes_and_rows))
        runs["similar"].append(timed(responses_and_neighbours))
    (pass_wall, pass_cpu, _), (pred_wall, pred_cpu, _), (votes_wall, votes_cpu, tables), (sim_wall, sim_cpu, found) = (
        min(runs[name], key=lambda r: r[0]) for name in ("pass", "pred", "votes", "similar"))
    rows = sum(t["unit_classes"].num_rows for t in tables)
    extra_wall, extra_cpu = pred_wall - pass_wall, pred_cpu - pass_cpu
    cost_wall, cost_cpu = extra_wall + votes_wall, extra_cpu + votes_cpu
    print(f"  dataset pass (stats, dataset)      wall {pass_wall:7.1f} s  CPU {pass_cpu:7.1f} s")
    print(f"  the pass run to the output          wall {pred_wall:7.1f} s  CPU {pred_cpu:7.1f} s"
          f"  (+{extra_wall:.1f} s wall for the predictions)")
    print(f"  class votes, all layers, {len(jobs)} jobs  wall {votes_wall:7.1f} s  CPU {votes_cpu:7.1f} s"
          f"  ({rows:,} rows)")
    print(f"  similar: responses and neighbours  wall {sim_wall:7.1f} s  CPU {sim_cpu:7.1f} s"
          f"  ({found:,} neighbour rows)")
    print(f"classes / dataset pass: wall {cost_wall / pass_wall:.2f}, CPU {cost_cpu / pass_cpu:.2f} "
          f"(classes: {cost_wall:.1f} s wall, {cost_cpu:.1f} s CPU)")
    print(f"similar / dataset pass: wall {sim_wall / pass_wall:.2f}, CPU {sim_cpu / pass_cpu:.2f}")
    print(f"similar + classes / dataset pass: wall {(sim_wall + cost_wall) / pass_wall:.2f}, "
          f"CPU {(sim_cpu + cost_cpu) / pass_cpu:.2f} (target: under 0.5)")


if __name__ == "__main__":
    main()
