"""The job runner: the one job function that every executor calls (`run_jobs`), the context the jobs run
with, and the shared streaming pass over the dataset that feeds every `PassTechnique`.

Jobs name their technique; the registry (`precompute.techniques`) says how each runs, so nothing here knows
any technique by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import pyarrow as pa
import torch
from tqdm import tqdm

from precompute.dataset_pass import CANDIDATES, dataset_pass
from precompute.datasets import Dataset, open_dataset
from precompute.feature_layers import with_stored
from precompute.jobs import Job, write_shard
from precompute.layers import Geometry, with_layers
from precompute.models import ModelSpec, build, resolve
from precompute.request import Request, UsageError, check_device, select_layers
from precompute.techniques import TECHNIQUES, Technique
from store.errors import one_line


@dataclass(frozen=True)
class Context:
    """What a technique's `run` or `from_pass` gets besides its job (see `precompute.techniques.base`)."""

    model: torch.nn.Module
    spec: ModelSpec
    geometry: dict[str, Geometry]
    dataset: Dataset
    device: torch.device
    request: Request
    layers: list[str]  # the layers the request names, in model order: a technique's shared work covers these
    cache: dict = field(default_factory=dict, compare=False)  # work shared by one request's jobs (stimulus passes)


def load(req: Request, device: torch.device) -> tuple[torch.nn.Module, ModelSpec, Dataset]:
    """The request's model on `device`, its spec with its layers (the dictionary layers of the work folder
    among them, `precompute.feature_layers`), and its dataset (cut to max_images)."""
    dataset = open_dataset(req.dataset)
    if req.max_images:
        dataset.items = dataset.items[: req.max_images]
    spec = resolve(req.model, req.overrides)
    model = build(spec, pretrained=True, device=device)
    # Dictionaries trained before (in this work folder) are layers of the model from then on.
    spec, _ = with_stored(model, with_layers(spec, model), req.work_dir)
    return model, spec, dataset


def make_context(req: Request, geo: dict[str, Geometry], model, spec: ModelSpec, dataset: Dataset,
                 device: torch.device) -> Context:
    # Layers the driver could not measure have no jobs, and take no part in the work that jobs share.
    return Context(model, spec, geo, dataset, device, req, [n for n in select_layers(req.layers, spec) if n in geo])


# The context of the request being run, per process: a Ray worker process runs many jobs of one request and
# builds the model and opens the dataset once. One entry, so a long-lived worker holds one model at a time.
_CONTEXTS: dict[str, Context] = {}


def _context_key(req: Request) -> str:
    return repr(dataclasses.replace(req, progress=False))


@contextlib.contextmanager
def installed(ctx: Context):
    """Runs the request's jobs in this process with a context its caller already built (the local executor
    has the model loaded for planning), and forgets it afterwards."""
    _CONTEXTS.clear()
    _CONTEXTS[_context_key(ctx.request)] = ctx
    try:
        yield ctx
    finally:
        _CONTEXTS.clear()


def job_context(req: Request, geo: dict[str, Geometry]) -> Context:
    """The model, dataset and geometry that the request's jobs run with, built on first use in this process."""
    key = _context_key(req)
    if key not in _CONTEXTS:
        device = check_device(req.device)
        model, spec, dataset = load(req, device)
        _CONTEXTS.clear()
        _CONTEXTS[key] = make_context(req, geo, model, spec, dataset, device)
    return _CONTEXTS[key]


def run_jobs(req: Request, jobs: tuple[Job, ...], geo: dict[str, Geometry]) -> frozenset[int]:
    """The job function of every executor: runs the jobs given by their keys, for the request, and writes one
    shard per job. Jobs of pass techniques (of any layers) share one streaming pass over the dataset; the
    others run one by one. Jobs whose shard exists are skipped, so a task retried after a worker died midway,
    or run again by a restarted driver, writes no shard twice. Returns the indices of the dataset items this
    process found unreadable, so that a driver counts each unreadable file once, whichever worker met it."""
    ctx = job_context(req, geo)
    work = req.work_dir
    jobs = tuple(job for job in jobs if not job.done(work))
    shared = [job for job in jobs if TECHNIQUES[job.technique].shares_pass]
    if shared:
        run_pass_jobs(ctx, shared)
    for job in jobs:
        technique = TECHNIQUES[job.technique]
        if not technique.shares_pass:
            started = time.time()
            tables = technique.run(ctx, job)
            _write(technique, job, tables, {"seed": req.seed, "device": str(ctx.device),
                                            "seconds": round(time.time() - started, 2)}, work)
    return frozenset(ctx.dataset.unreadable)


def pass_params(req: Request, dataset: Dataset) -> dict:
    """What the shared pass adds to the params of every pass technique's jobs: its results depend on these."""
    return {"dataset": req.dataset, "dataset_items": len(dataset), "k": req.k, "reservoir": req.reservoir}


def run_pass_jobs(ctx: Context, jobs: list[Job]) -> None:
    """One streaming pass over the dataset for all the jobs' layers, then one shard per job."""
    req = ctx.request
    layers = list(dict.fromkeys(job.layer for job in jobs))
    started = time.time()
    # The pass runs the model to its output only where a technique asks for the predictions (classes).
    predictions = any(TECHNIQUES[job.technique].needs_predictions for job in jobs)
    records = dataset_pass(ctx.model, ctx.spec, layers, ctx.geometry, ctx.dataset, ctx.device, k=req.k * CANDIDATES,
                           reservoir=req.reservoir, seed=req.seed, batch_size=req.batch_size, progress=req.progress,
                           predictions=predictions)
    seen = records[layers[0]].count
    if seen == 0:
        raise UsageError(f"no readable images in dataset {ctx.dataset.name} ({ctx.dataset.skipped} skipped)")
    meta = {"seed": req.seed, "dataset": req.dataset, "images_seen": seen, "images_skipped": ctx.dataset.skipped,
            "device": str(ctx.device), "seconds": round(time.time() - started, 2)}
    failures = []
    for name in dict.fromkeys(job.technique for job in jobs):
        mine = [job for job in jobs if job.technique == name]
        try:
            TECHNIQUES[name].after_pass(ctx, mine, records)
        except Exception as exc:  # noqa: BLE001 - as below: the other techniques' shards are still written
            failures += [job.failure(one_line(exc)) for job in mine]
    failed = {f["key"] for f in failures}
    for job in tqdm([job for job in jobs if job.key not in failed], desc="writing shards", unit="job",
                    disable=not req.progress):
        technique = TECHNIQUES[job.technique]
        try:
            _write(technique, job, technique.from_pass(ctx, job, records[job.layer]), meta, req.work_dir)
        except Exception as exc:  # noqa: BLE001 - one technique's failure must not cost the pass's other shards
            failures.append(job.failure(one_line(exc)))
    if failures:
        raise JobsFailed(failures)


class JobsFailed(RuntimeError):
    """Some jobs of a pass failed after the pass itself ran; every other job's shard is written. `failures`:
    {"key", "label", "error"} per failed job."""

    def __init__(self, failures: list[dict]):
        super().__init__("; ".join(f"{f['label']}: {f['error']}" for f in failures))
        self.failures = failures


def _write(technique: Technique, job: Job, tables: dict[str, pa.Table], meta: dict, work) -> None:
    undeclared = sorted(set(tables) - set(technique.tables))
    if undeclared:  # the store would never read them: a technique's declared tables are its contract
        raise RuntimeError(f"technique {technique.name} returned table {undeclared[0]!r}, which it does not "
                           f"declare (its tables: {', '.join(technique.tables)})")
    write_shard(work, job, tables, meta)
