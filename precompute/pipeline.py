"""`microscope precompute`: load the model and dataset, measure the layers, plan the jobs, run the pending
ones on an executor (`local_executor` or `ray_executor`, both calling `runner.run_jobs`), ingest the store."""

from __future__ import annotations

import dataclasses
import json
import time

import torch

from precompute import local_executor, ray_executor
from precompute.dataset_pass import normalise
from precompute.datasets import Dataset
from precompute.feature_layers import base_of, is_feature_layer, with_stored
from precompute.jobs import Job
from precompute.layers import Geometry, geometry
from precompute.models import ModelSpec
from precompute.request import (
    Request,
    UsageError,
    check_device,
    driver_device,
    parse_executor,
    parse_techniques,
    parse_units,
    select_layers,
)
from precompute.runner import load, make_context, pass_params
from precompute.techniques import TECHNIQUES, Technique
from precompute.techniques.dictionary import layout
from store import shards, workdir
from store.errors import one_line
from store.ingest import ingest


def precompute(req: Request) -> dict:
    """Runs every pending job of the request and ingests the store; returns a summary. Jobs that failed (an
    error inside the model, or on Ray a job still failing after its retries) are listed under "failed", each
    costing only itself: the store holds every other job's shard. A layer whose receptive field cannot be
    measured fails its jobs without running them."""
    techniques = parse_techniques(req.techniques)
    executor = parse_executor(req.executor)
    # Settled once, before the model loads: a default folder is chosen by what lies beside the store, which
    # this run itself changes (its shards, its store file).
    req = dataclasses.replace(req, work=req.work_dir)
    device = check_device(req.device) if executor == "local" else driver_device(req.device)
    model, spec, dataset = load(req, device)
    layers = select_layers(req.layers, spec)
    work = req.work_dir
    started = time.time()
    failed, unreadable, ran, planned = [], set(), 0, 0
    if "dictionary" in techniques:
        # Dictionaries first: their feature layers are layers like any other for the rest of the request.
        dictionary = TECHNIQUES["dictionary"]
        bases = [name for name in layers if not is_feature_layer(name)]
        names = [f"{name}/{layout(spec.layer(name).units, req.options, name)[0]}" for name in bases]
        geo, unmeasured = model_geometry(model, spec, dataset, work, device, layers)
        jobs = plan_jobs(spec, {name: list(range(spec.layer(name).units)) for name in bases}, [dictionary], req,
                         dataset)
        outcome = _run(req, executor, jobs, geo, unmeasured, model, spec, dataset, device)
        failed, unreadable, ran, planned = outcome[0], outcome[1], outcome[2], len(jobs)
        spec, _ = with_stored(model, spec, work)
        known = {layer.name for layer in spec.layers}
        layers = list(dict.fromkeys([*layers, *(name for name in names if name in known)]))
        req = dataclasses.replace(req, layers=",".join(layers))
        techniques = [t for t in techniques if t != "dictionary"]
    units = {name: parse_units(req.units, spec.layer(name).units, name) for name in layers}
    geo, unmeasured = model_geometry(model, spec, dataset, work, device, layers)
    _, dictionaries = with_stored(model, spec, work) if any(map(is_feature_layer, layers)) else (spec, {})
    jobs = plan_jobs(spec, units, [TECHNIQUES[t] for t in techniques], req, dataset, dictionaries)
    more_failed, more_unreadable, more_ran = _run(req, executor, jobs, geo, unmeasured, model, spec, dataset, device)
    failed += more_failed
    summary = {"model": spec.id, "jobs": planned + len(jobs), "ran": ran + more_ran,
               "skipped": planned + len(jobs) - ran - more_ran - len(failed), "failed": failed,
               # The driver's geometry probe and the workers' passes may each meet the same unreadable file.
               "images_skipped": len(dataset.unreadable | unreadable | more_unreadable),
               "seconds": round(time.time() - started, 1)}
    summary["store"] = ingest(work, req.store, progress=req.progress)
    return summary


def _run(req: Request, executor: str, jobs: list[Job], geo: dict[str, Geometry], unmeasured: dict[str, str],
         model, spec: ModelSpec, dataset: Dataset, device) -> tuple[list[dict], set, int]:
    """Runs the pending jobs on the executor: (failed jobs, unreadable item indices, jobs that ran)."""
    pending = pending_jobs(jobs, req.work_dir)
    lost = [job.failure(f"measuring the layer failed: {unmeasured[job.layer]}") for job in pending
            if job.layer in unmeasured]
    pending = [job for job in pending if job.layer not in unmeasured]
    if not pending:
        return lost, set(), 0
    if executor == "ray":
        failed, unreadable = ray_executor.run(req, pending, geo)
    else:
        failed, unreadable = local_executor.run(make_context(req, geo, model, spec, dataset, device), pending)
    return lost + failed, set(unreadable), len(pending) - len(failed)


def job_params(technique: Technique, req: Request, spec: ModelSpec, dataset: Dataset) -> dict:
    """Everything besides the key's model, layer and units that determines a technique's result."""
    params = {
        "seed": req.seed,
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "weights": f"{spec.source}:{spec.hub_id or spec.location or spec.arch}@{spec.revision}",
        "version": technique.VERSION,
    }
    if technique.shares_pass:
        params.update(pass_params(req, dataset))
    params.update(technique.params(req, spec))
    return params


def plan_jobs(spec: ModelSpec, units: dict[str, list[int]], techniques: list[Technique], req: Request,
              dataset: Dataset, dictionaries: dict | None = None) -> list[Job]:
    """Every technique's jobs, in the model's layer order (techniques in the request's order within a layer):
    jobs that share work across layers, such as circuits' weight pairs, expect to run in that order. The jobs
    of a dictionary layer carry the key of the dictionary job that trained it (`dictionaries`: layer ->
    feature_layers.Stored), so a retrained dictionary recomputes them."""
    dictionaries = dictionaries or {}
    jobs = []
    for t in techniques:
        params = job_params(t, req, spec, dataset)
        jobs += t.plan(spec.id, {n: u for n, u in units.items() if n not in dictionaries}, params)
        for name in (n for n in units if n in dictionaries):
            jobs += t.plan(spec.id, {name: units[name]}, {**params, "dictionary": dictionaries[name].key})
    depth = {layer.name: i for i, layer in enumerate(spec.layers)}
    return sorted(jobs, key=lambda job: depth[job.layer])


def pending_jobs(jobs: list[Job], work: workdir.Location) -> list[Job]:
    if workdir.is_url(work):  # one listing of the bucket, not a request per job
        finished = set(shards.finished_shards(work))
        return [job for job in jobs if job.shard_dir(work) not in finished]
    return [job for job in jobs if not job.done(work)]


def model_geometry(model: torch.nn.Module, spec: ModelSpec, dataset: Dataset, work: workdir.Location,
                   device: torch.device, layers: list[str]) -> tuple[dict[str, Geometry], dict[str, str]]:
    """Map sizes and receptive fields, cached in the work folder's model record: of every layer of a model the
    registry lists; of a discovered model, only of the layers asked for now or before (it may have hundreds),
    which are the layers its record, and so the store, lists. Also returns, for each layer whose measuring
    raised (an error inside the model), that error in one line: the layer is left out of the record."""
    rel = shards.model_rel(spec.id)
    record = spec.to_json()
    cached = json.loads(workdir.read_text(work, rel) or "{}")
    same_input = cached.get("input_size") == spec.input_size
    known = {layer["name"]: layer for layer in cached.get("layers", []) if "rf_px" in layer} if same_input else {}
    wanted = {layer.name for layer in spec.layers} if not spec.discovered else set(layers) | set(known)
    wanted &= {layer.name for layer in spec.layers}
    geo = {n: Geometry(known[n]["height"], known[n]["width"], known[n]["rf_px"]) for n in wanted if n in known}
    # A dictionary layer's map is its base layer's, position for position.
    features = [layer.name for layer in spec.layers if is_feature_layer(layer.name)]
    missing = [layer for layer in spec.layers if layer.name in wanted and layer.name not in geo
               and not is_feature_layer(layer.name)]
    unmeasured: dict[str, str] = {}
    if missing:
        probe = [image for _, (_, image) in zip(range(8), dataset.stream(spec.input_size))]
        if not probe:
            raise UsageError(f"no readable images in dataset {dataset.name}")
        images = normalise(probe, spec.mean, spec.std).to(device)
        for layer in missing:  # one at a time, as geometry() goes anyway: a layer that raises costs only itself
            try:
                geo.update(geometry(model, dataclasses.replace(spec, layers=(layer,)), images))
            except Exception as exc:  # noqa: BLE001 - any error raised inside the model
                unmeasured[layer.name] = one_line(exc)
    for name in features:
        if base_of(name) in geo:
            geo[name] = geo[base_of(name)]
    record["layers"] = [layer for layer in record["layers"] if layer["name"] in geo]
    for layer in record["layers"]:
        g = geo[layer["name"]]
        layer.update(height=g.height, width=g.width, rf_px=g.rf_px)
    workdir.write_bytes(work, rel, json.dumps(record, indent=1).encode())
    return geo, unmeasured
