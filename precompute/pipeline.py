"""`microscope precompute`: resolve the model, plan jobs, run the pending ones, write shards, ingest."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm import tqdm

from precompute.techniques import circuits, dataset_examples, featurevis, stats, tuning
from store import shards, workdir
from precompute.dataset_pass import dataset_pass, normalise
from precompute.datasets import Dataset, open_dataset
from precompute.jobs import Job, plan, write_shard
from precompute.layers import Geometry, geometry, with_layers
from precompute.models import ModelSpec, Overrides, build, resolve
from store import pictures
from store.ingest import ingest
from store.errors import MicroscopeError

# Techniques computed together by one streaming pass over the dataset (modules with VERSION and rows()).
PASS_TECHNIQUES = {"stats": stats, "dataset": dataset_examples}
# Techniques whose jobs run one by one: modules with VERSION, params(req, spec) -> dict of the settings
# that determine the result, and run(ctx, job) -> {table name in store/schema.sql: pyarrow.Table}.
JOB_TECHNIQUES: dict = {"tuning": tuning, "featurevis": featurevis, "circuits": circuits}
TECHNIQUES = (*PASS_TECHNIQUES, *JOB_TECHNIQUES)
# What `--techniques default` computes: everything but feature visualisation, which costs seconds per unit
# on a CPU (ask for it by name, or with `all`). Circuits cost about a minute of CPU for the bundled model.
DEFAULT_TECHNIQUES = ("stats", "dataset", "tuning", "circuits")
EXECUTORS = ("local", "ray")


class UsageError(MicroscopeError, ValueError):
    """A bad command-line value; the message is one line for the user."""

    exit_code = 2


@dataclass
class Request:
    model: str
    store: Path
    layers: str = "all"
    units: str = "all"
    techniques: str = "default"
    dataset: str = "sample"
    device: str = "cpu"
    seed: int = 0
    k: int = 16
    batch_size: int = 32
    reservoir: int = 20_000
    max_images: int | None = None  # use only the first N dataset items (quick runs and tests)
    options: dict = field(default_factory=dict)  # technique settings from the command line (JOB_TECHNIQUES)
    work: Path | str | None = None  # a local path, or an object-store URL such as s3://bucket/prefix
    overrides: Overrides = field(default_factory=Overrides)
    progress: bool = True
    executor: str = "local"  # local (in this process) or ray
    address: str | None = None  # the Ray cluster to join; None starts a local one

    @property
    def work_dir(self) -> workdir.Location:
        return workdir.location(self.work) or self.store.parent / "work"


def parse_units(text: str, count: int, layer: str) -> list[int]:
    """`all`, or comma-separated units and inclusive ranges: `0-15,40`."""
    if text.strip() == "all":
        return list(range(count))
    units: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                units.update(range(lo, hi + 1))
            else:
                units.add(int(part))
        except ValueError:
            raise UsageError(f"bad unit range {part!r}: expected e.g. 0-15,40 or all") from None
    bad = [u for u in units if not 0 <= u < count]
    if bad:
        raise UsageError(f"unit {min(bad) if min(bad) < 0 else max(bad)} is out of range for layer {layer} "
                         f"(units 0-{count - 1})")
    return sorted(units)


def parse_techniques(text: str) -> list[str]:
    named = {"all": list(TECHNIQUES), "default": list(DEFAULT_TECHNIQUES)}
    chosen = named.get(text.strip()) or [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in TECHNIQUES]
    if unknown or not chosen:
        raise UsageError(f"unknown technique {unknown[0] if unknown else text!r}; available: {', '.join(TECHNIQUES)}")
    return chosen


def select_layers(text: str, spec: ModelSpec) -> list[str]:
    if text.strip() == "all":
        return [layer.name for layer in spec.layers]
    return list(dict.fromkeys(spec.layer(name.strip()).name for name in text.split(",") if name.strip()))


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name} asked for, but no CUDA GPU is available here; use --device cpu")
    return device


def precompute(req: Request) -> dict:
    """Runs every pending job of the request and ingests the store; returns a summary. Jobs that failed on
    Ray after their retries are listed under "failed"; the store still holds every finished shard."""
    techniques = parse_techniques(req.techniques)
    if req.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {req.executor!r}; available: {', '.join(EXECUTORS)}")
    device = check_device(req.device) if req.executor == "local" else driver_device(req.device)
    model, spec, dataset = load(req, device)
    layers = select_layers(req.layers, spec)
    units = {name: parse_units(req.units, spec.layer(name).units, name) for name in layers}

    work = req.work_dir
    geo = model_geometry(model, spec, dataset, work, device)
    params = {t: technique_params(t, req, spec, dataset) for t in techniques}
    jobs = plan(spec.id, units, techniques, params)
    if workdir.is_url(work):  # one listing of the bucket, not a request per job
        finished = set(shards.finished_shards(work))
        pending = [job for job in jobs if job.shard_dir(work) not in finished]
    else:
        pending = [job for job in jobs if not job.done(work)]
    started = time.time()
    failed: list[dict] = []
    if req.executor == "ray":
        from precompute import ray_executor

        failed = ray_executor.run(req, group_jobs(pending), geo)
    else:
        _CONTEXTS[_context_key(req)] = Context(model, spec, geo, dataset, device, req)
        try:
            pass_jobs = tuple(job for job in pending if job.technique in PASS_TECHNIQUES)
            if pass_jobs:
                run_jobs(req, pass_jobs, geo)
            for job in tqdm([j for j in pending if j.technique in JOB_TECHNIQUES], desc="jobs", unit="job",
                            disable=not req.progress):
                run_jobs(req, (job,), geo)
        finally:
            _CONTEXTS.clear()
    summary = {"model": spec.id, "jobs": len(jobs), "ran": len(pending) - len(failed),
               "skipped": len(jobs) - len(pending), "failed": failed,
               "images_skipped": dataset.skipped, "seconds": round(time.time() - started, 1)}
    summary["store"] = ingest(work, req.store, progress=req.progress)
    return summary


def driver_device(name: str) -> torch.device:
    """Where a Ray driver builds the model to plan jobs and measure layer geometry. Workers run the jobs on the
    requested device; the driver may have no GPU at all (a laptop submitting to a cluster), and map sizes and
    receptive fields do not depend on the device."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"bad device {name!r}: expected cpu, cuda or cuda:N") from None
    return device if device.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")


def load(req: Request, device: torch.device) -> tuple[torch.nn.Module, ModelSpec, Dataset]:
    dataset = open_dataset(req.dataset)
    if req.max_images:
        dataset.items = dataset.items[: req.max_images]
    spec = resolve(req.model, req.overrides)
    model = build(spec, pretrained=True, device=device)
    return model, with_layers(spec, model), dataset


def group_jobs(jobs: list[Job]) -> list[tuple[Job, ...]]:
    """Jobs as units of work for a cluster: the pass jobs of each layer together (one streaming pass over the
    dataset computes all of them), every other job alone. One pass per layer rather than one for all layers:
    layers spread over workers, at the price of decoding the dataset once per layer and running the forward
    pass up to each layer in its own task (about half the model on average): more work in all, less time once
    there are a few workers. Deepest layers first (plan order is the model's), so that the longest passes start
    first and short ones fill the gaps at the end."""
    by_layer: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.technique in PASS_TECHNIQUES:
            by_layer[job.layer].append(job)
    return [tuple(group) for group in reversed(by_layer.values())] + [
        (job,) for job in jobs if job.technique in JOB_TECHNIQUES]


# The context of the request being run, per process: a Ray worker process runs many jobs of one request and
# builds the model and opens the dataset once. One entry, so a long-lived worker holds one model at a time.
_CONTEXTS: dict[str, Context] = {}


def _context_key(req: Request) -> str:
    return repr(dataclasses.replace(req, progress=False))


def job_context(req: Request, geo: dict[str, Geometry]) -> Context:
    """The model, dataset and geometry that the request's jobs run with, built on first use in this process."""
    key = _context_key(req)
    if key not in _CONTEXTS:
        device = check_device(req.device)
        model, spec, dataset = load(req, device)
        _CONTEXTS.clear()
        _CONTEXTS[key] = Context(model, spec, geo, dataset, device, req)
    return _CONTEXTS[key]


def run_jobs(req: Request, jobs: tuple[Job, ...], geo: dict[str, Geometry]) -> None:
    """The job function of every executor: runs the jobs given by their keys, for the request, and writes one
    shard per job. Pass jobs (of any layers) share one streaming pass over the dataset; the others run one by
    one. Jobs whose shard exists are skipped, so a task retried after a worker died midway, or run again by a
    restarted driver, writes no shard twice."""
    ctx = job_context(req, geo)
    work = req.work_dir
    jobs = tuple(job for job in jobs if not job.done(work))
    pass_jobs = [job for job in jobs if job.technique in PASS_TECHNIQUES]
    if pass_jobs:
        run_pass_jobs(ctx.model, ctx.spec, ctx.geometry, ctx.dataset, pass_jobs, req, ctx.device)
    for job in jobs:
        if job.technique in JOB_TECHNIQUES:
            job_started = time.time()
            tables = JOB_TECHNIQUES[job.technique].run(ctx, job)
            write_shard(work, job, tables, {"seed": req.seed, "device": str(ctx.device),
                                            "seconds": round(time.time() - job_started, 2)})


@dataclass(frozen=True)
class Context:
    """What a job technique's run() gets besides its job."""

    model: torch.nn.Module
    spec: ModelSpec
    geometry: dict[str, Geometry]
    dataset: Dataset
    device: torch.device
    request: Request
    cache: dict = field(default_factory=dict, compare=False)  # work shared by one request's jobs (stimulus passes)


def technique_params(technique: str, req: Request, spec: ModelSpec, dataset: Dataset) -> dict:
    """Everything besides the key's model, layer and units that determines a technique's result."""
    params = {
        "seed": req.seed,
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "weights": f"{spec.source}:{spec.hub_id or spec.location or spec.arch}@{spec.revision}",
    }
    if technique in PASS_TECHNIQUES:
        params.update(version=PASS_TECHNIQUES[technique].VERSION, dataset=req.dataset, dataset_items=len(dataset),
                      k=req.k, reservoir=req.reservoir)
    else:
        params.update(version=JOB_TECHNIQUES[technique].VERSION, **JOB_TECHNIQUES[technique].params(req, spec))
    return params


def model_geometry(model, spec: ModelSpec, dataset: Dataset, work: workdir.Location, device) -> dict[str, Geometry]:
    """Map sizes and receptive fields of every layer, cached in the work folder's model record."""
    rel = shards.model_rel(spec.id)
    record = spec.to_json()
    cached = json.loads(workdir.read_text(work, rel) or "{}")
    known = {layer["name"]: layer for layer in cached.get("layers", []) if "rf_px" in layer}
    if all(layer.name in known for layer in spec.layers) and cached.get("input_size") == spec.input_size:
        geo = {n: Geometry(known[n]["height"], known[n]["width"], known[n]["rf_px"]) for n in known}
    else:
        probe = [image for _, (_, image) in zip(range(8), dataset.stream(spec.input_size))]
        if not probe:
            raise UsageError(f"no readable images in dataset {dataset.name}")
        geo = geometry(model, spec, normalise(probe, spec.mean, spec.std).to(device))
    for layer in record["layers"]:
        g = geo[layer["name"]]
        layer.update(height=g.height, width=g.width, rf_px=g.rf_px)
    workdir.write_bytes(work, rel, json.dumps(record, indent=1).encode())
    return geo


def run_pass_jobs(model, spec: ModelSpec, geo, dataset: Dataset, jobs: list[Job], req: Request, device) -> None:
    """One streaming pass over the dataset for all pending jobs' layers, then one shard per job."""
    layers = list(dict.fromkeys(job.layer for job in jobs))
    started = time.time()
    records = dataset_pass(model, spec, layers, geo, dataset, device, k=req.k, reservoir=req.reservoir,
                           seed=req.seed, batch_size=req.batch_size, progress=req.progress)
    seen = records[layers[0]].count
    if seen == 0:
        raise UsageError(f"no readable images in dataset {dataset.name} ({dataset.skipped} skipped)")
    seconds = time.time() - started
    dataset_key = f"{shards.slug(req.dataset)}-{spec.input_size}"
    meta = {"seed": req.seed, "dataset": req.dataset, "images_seen": seen, "images_skipped": dataset.skipped,
            "device": str(device), "seconds": round(seconds, 2)}
    for job in tqdm(jobs, desc="writing shards", unit="job", disable=not req.progress):
        record = records[job.layer]
        if job.technique == "stats":
            tables = {"unit_stats": stats.rows(record, spec.id, job.layer, job.unit_start, job.unit_stop, job.key)}
        else:
            tables = example_tables(record, spec, job, dataset, dataset_key, req.work_dir)
        write_shard(req.work_dir, job, tables, meta)


def example_tables(record, spec: ModelSpec, job: Job, dataset: Dataset, dataset_key: str,
                   work: workdir.Location) -> dict:
    """The dataset technique's rows, its thumbnails, and the images they show (written once per dataset)."""
    examples = dataset_examples.rows(record, spec.id, job.layer, job.unit_start, job.unit_stop, job.key,
                                     image_id=lambda i: f"{dataset_key}:{i}")
    listing = {"image_id": [], "dataset": [], "source": [], "path": []}
    missing = []
    stored = workdir.names_under(work, f"images/{dataset_key}")
    for image_id in sorted(dataset_examples.referenced_images(examples)):
        index = int(image_id.rsplit(":", 1)[1])
        rel = f"images/{dataset_key}/{index:07d}.webp"
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
        return [(r["unit"], pictures.encode(pictures.crop(image, r["box"], dataset_examples.THUMB_PX)))
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
    return {"dataset_examples": examples, "thumbnails": thumbnails, "images": pa.table(listing)}
