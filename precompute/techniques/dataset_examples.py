"""The `dataset` technique: per unit, the images that excite it most and least, and a sample across quantiles.

Each example keeps its image (stored once per dataset), the argmax position, the crop around it sized to
the layer's effective receptive field, and the activation map under that crop (for the heatmap overlay).
Per unit, `top_paths` keeps the unit's mean path over its strongest examples (precompute.paths: what each
input channel of the layer adds to its activation), which featurevis pictures are compared with (store.trust).
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from precompute import paths
from precompute.dataset_pass import CANDIDATES, LayerRecord, normalise
from precompute.places import Places, distinct_ranks, placer
from precompute.techniques.base import PassTechnique
from store import pictures, shards, trust, workdir

# Circuits-style sample of the response distribution, from the top of the range down.
QUANTILES = (0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
THUMB_PX = 96
PATH_EXAMPLES = 5  # the top examples whose paths are read: the floor needs three; each may add an image to run


def rows(record: LayerRecord, model_id: str, layer: str, start: int, stop: int, run_id: str,
         image_id, frame, k: int) -> pa.Table:
    """`image_id(index)` names a dataset image in the store; `frame(index)` says where it lies in its source
    image (`Dataset.frame`). Each unit keeps up to `k` top and `k` bottom examples, from the pass's longer
    candidate lists, and one example per quantile; within each of the three lists none shows a place of a
    source image that an example before it shows (`precompute.places`): the best of a repeated place is kept."""
    win = record.window
    cols: dict[str, list] = {c: [] for c in ("unit", "kind", "rank", "quantile", "image_id", "activation",
                                             "pos_y", "pos_x", "box", "source_image", "source_box", "heat")}
    place = placer(win, frame)

    def add(unit, kind, rank, quantile, index, activation, pos, heat, where):
        for key, value in (("unit", unit), ("kind", kind), ("rank", rank), ("quantile", quantile),
                           ("image_id", image_id(int(index))), ("activation", float(activation)),
                           ("pos_y", int(pos) // win.width), ("pos_x", int(pos) % win.width),
                           ("box", list(win.box(int(pos)))), ("source_image", where[0]),
                           ("source_box", list(where[1])), ("heat", heat.tobytes() if heat is not None else None)):
            cols[key].append(value)

    # Each list is kept free of repeats on its own: one place may be among a unit's strongest and its weakest
    # responses (at two scales), which says something; twice in one list it says nothing new.
    for kind, ext in (("top", record.top), ("bottom", record.bottom)):
        value, index, pos, heat = (t.cpu().numpy() for t in ext.ranked())
        for unit in range(start, stop):
            for kept, rank in enumerate(distinct_ranks(index[:, unit], pos[:, unit], k, place)):
                add(unit, kind, kept, None, index[rank, unit], value[rank, unit], pos[rank, unit],
                    heat[rank, unit].astype(np.float16), place(int(index[rank, unit]), int(pos[rank, unit])))

    values, positions, indices = record.reservoir()
    for unit in range(start, stop):
        order = np.argsort(values[:, unit], kind="stable")
        rank, places = 0, Places()
        for q in QUANTILES:
            target = min(len(order) - 1, int(round(q * (len(order) - 1))))
            # The nearest image in the ranking whose place is not shown yet stands for the quantile.
            for row in (order[i] for i in _outward(target, len(order))):
                where = place(int(indices[row]), int(positions[row, unit]))
                if places.add(*where):
                    add(unit, "quantile", rank, q, indices[row], values[row, unit], positions[row, unit], None, where)
                    rank += 1
                    break

    n = len(cols["unit"])
    return pa.table({
        "model_id": [model_id] * n, "layer": [layer] * n, **{k: v for k, v in cols.items() if k != "heat"},
        "heat_cells": [win.cells if h is not None else 0 for h in cols["heat"]],
        "heat": pa.array(cols["heat"], type=pa.binary()), "run_id": [run_id] * n,
    })


def _outward(start: int, n: int):
    """start, start + 1, start - 1, start + 2, ... within 0..n-1."""
    yield start
    for step in range(1, n):
        for i in (start + step, start - step):
            if 0 <= i < n:
                yield i


def top_paths(ctx, jobs: list, examples: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Per job (by key, from its example rows): per unit, its mean path (precompute.paths) over its
    PATH_EXAMPLES strongest examples, each at the cell where it peaks, and the natural floor of their agreement
    (store.trust). One forward per image that a unit of any of the jobs reads; no rows for a layer whose module
    cannot be run alone on its input."""
    spec, dataset = ctx.spec, ctx.dataset
    pairs: dict[str, list] = defaultdict(list)
    for job in jobs:
        t = examples[job.key]
        top = t.filter(pc.and_(pc.equal(t["kind"], "top"), pc.less(t["rank"], PATH_EXAMPLES)))
        pairs[job.layer] += [(int(r["image_id"].rsplit(":", 1)[1]), r["unit"], (r["pos_y"], r["pos_x"]))
                             for r in top.select(["unit", "image_id", "pos_y", "pos_x"]).to_pylist()]

    def load(index: int) -> torch.Tensor:
        return normalise([dataset.load(index, spec.input_size)], spec.mean, spec.std)[0].to(ctx.device)

    ordered = [layer for layer in ctx.layers if layer in pairs] + [layer for layer in pairs if layer not in ctx.layers]
    # The request's batch size, which the pass ran with: a user who lowered it for memory gets it here too.
    shares = paths.contributions(ctx.model, load, {layer: pairs[layer] for layer in ordered},
                                 batch=ctx.request.batch_size, progress=ctx.request.progress)
    by_unit: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    for layer, got in shares.items():
        for (_, unit, _), share in zip(pairs[layer], got if got is not None else ()):
            by_unit[layer, unit].append(share)
    out = {}
    for job in jobs:
        units = [u for u in range(job.unit_start, job.unit_stop) if (job.layer, u) in by_unit]
        mine = [by_unit[job.layer, u] for u in units]
        out[job.key] = pa.table({
            "model_id": [spec.id] * len(units), "layer": [job.layer] * len(units), "unit": units,
            "path": pa.array([trust.encode(np.mean(m, axis=0)) for m in mine], type=pa.binary()),
            "natural_floor": pa.array([trust.natural_floor(np.stack(m)) for m in mine], type=pa.float64()),
            "examples": [len(m) for m in mine], "run_id": [job.key] * len(units),
        }, schema=TOP_PATHS)
    return out


TOP_PATHS = pa.schema([("model_id", pa.string()), ("layer", pa.string()), ("unit", pa.int64()),
                       ("path", pa.binary()), ("natural_floor", pa.float64()), ("examples", pa.int64()),
                       ("run_id", pa.string())])


def images_key(ctx) -> str:
    """What the dataset's images are stored under: the dataset at the model's input size."""
    return f"{shards.slug(ctx.request.dataset)}-{ctx.spec.input_size}"


def referenced_images(table: pa.Table) -> set[str]:
    return set(table.column("image_id").to_pylist())


class DatasetExamples(PassTechnique):
    name = "dataset"
    # 2: examples that repeat a place of a source image are dropped; rows name source and box; 3: top_profiles;
    # 4: top_paths (the unit's path on its top examples) in their place
    VERSION = 4
    tables = ("dataset_examples", "top_paths", "thumbnails", "images")
    unit_key = "dataset"

    def params(self, req, spec) -> dict:
        return {"candidates": CANDIDATES}

    def after_pass(self, ctx, jobs, records) -> None:
        """Every job's example rows, and from them the paths of the top examples of all the jobs' units at once
        (`top_paths`)."""
        spec, dataset = ctx.spec, ctx.dataset
        key = images_key(ctx)
        examples = {job.key: rows(records[job.layer], spec.id, job.layer, job.unit_start, job.unit_stop, job.key,
                                  image_id=lambda i: f"{key}:{i}", frame=lambda i: dataset.frame(i, spec.input_size),
                                  k=ctx.request.k) for job in jobs}
        found = top_paths(ctx, jobs, examples)
        ctx.cache["dataset"] = {job.key: (examples[job.key], found[job.key]) for job in jobs}

    def from_pass(self, ctx, job, record: LayerRecord) -> dict[str, pa.Table]:
        """The technique's rows, its thumbnails, and the images they show (written once per dataset)."""
        spec, dataset, work = ctx.spec, ctx.dataset, ctx.request.work_dir
        examples, found_paths = ctx.cache["dataset"].pop(job.key)
        dataset_key = images_key(ctx)
        listing = {"image_id": [], "dataset": [], "source": [], "path": []}
        missing = []
        stored = workdir.names_under(work, shards.images_rel(dataset_key))
        for image_id in sorted(referenced_images(examples)):
            index = int(image_id.rsplit(":", 1)[1])
            rel = shards.image_rel(dataset_key, index)
            if rel not in stored:  # dataset images are shared by every layer's jobs: encode each once
                missing.append((index, rel))
            for key, value in zip(listing, (image_id, dataset.name, dataset.source(index), rel)):
                listing[key].append(value)
        top = examples.filter(pc.and_(pc.equal(examples["kind"], "top"), pc.equal(examples["rank"], 0))).to_pylist()
        tops_by_image = defaultdict(list)
        for row in top:
            tops_by_image[int(row["image_id"].rsplit(":", 1)[1])].append(row)

        def thumbnails_of(index: int) -> list[tuple[int, bytes]]:
            image = dataset.load(index, spec.input_size)
            return [(r["unit"], pictures.encode(pictures.crop(image, r["box"], THUMB_PX)))
                    for r in tops_by_image[index]]

        def store_image(item: tuple[int, str]) -> None:
            workdir.write_bytes(work, item[1], pictures.encode(dataset.load(item[0], spec.input_size)))

        # PIL releases the GIL while it resizes and encodes: spread the image work over the cores.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(store_image, missing))
            thumb_by_unit = dict(pair for pairs in pool.map(thumbnails_of, tops_by_image) for pair in pairs)
        thumbs = [thumb_by_unit[r["unit"]] for r in top]
        thumbnails = pa.table({
            "model_id": [spec.id] * len(top), "layer": [job.layer] * len(top), "unit": [r["unit"] for r in top],
            "technique": ["dataset"] * len(top), "format": ["webp"] * len(top),
            "data": pa.array(thumbs, type=pa.binary()), "run_id": [job.key] * len(top),
        })
        return {"dataset_examples": examples, "thumbnails": thumbnails, "images": pa.table(listing),
                "top_paths": found_paths}


TECHNIQUE = DatasetExamples()
