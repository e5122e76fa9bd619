"""The `ray` executor: the same jobs and the same job function as the local executor, as Ray tasks.

Ray does the scheduling, the GPU placement and the retries; this module only submits tasks, shows progress
and collects the jobs that failed. Workers write shards straight into the work folder (a shared path or an
object-store URL) and never open the store: the driver ingests once every task has ended.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict

from tqdm import tqdm

from precompute.jobs import Job
from precompute.runner import run_jobs
from precompute.techniques import TECHNIQUES
from store.errors import MicroscopeError, one_line

# Attempts after the first, for a job that raises and for a worker that dies (Ray's max_retries covers both
# once retry_exceptions is on). Two: enough for a flaky node or an out-of-memory kill, few enough that a job
# that always fails is reported within minutes.
MAX_RETRIES = 2

# Settings the driver forwards to workers of a cluster it joins: where the object store is and how to reach
# the Hub. Never credentials: on a real cluster they belong to the nodes (an instance role, or the
# environment `ray start` ran in), not to a job's runtime_env, which the Ray dashboard displays.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
                 "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HOME", "HF_DATASETS_OFFLINE")


def group_jobs(jobs: list[Job]) -> list[tuple[Job, ...]]:
    """Jobs as units of work for a cluster: the pass jobs of each layer together (one streaming pass over the
    dataset computes all of them), every other job alone. One pass per layer rather than one for all layers:
    layers spread over workers, at the price of decoding the dataset once per layer and running the forward
    pass up to each layer in its own task (about half the model on average): more work in all, less time once
    there are a few workers. Deepest layers first (plan order is the model's), so that the longest passes start
    first and short ones fill the gaps at the end."""
    by_layer: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if TECHNIQUES[job.technique].shares_pass:
            by_layer[job.layer].append(job)
    return [tuple(group) for group in reversed(by_layer.values())] + [
        (job,) for job in jobs if not TECHNIQUES[job.technique].shares_pass]


def run(req, jobs: list[Job], geo) -> tuple[list[dict], set[int]]:
    """Runs the jobs as Ray tasks (see `group_jobs`). Returns the jobs that failed after their retries, as
    {"key", "label", "error"} (`Job.failure`), having let every other task finish; and the indices of the
    dataset items that the workers found unreadable."""
    try:
        import ray
    except ModuleNotFoundError as exc:  # Ray is an extra; a broken install of it (another name) is reported as is
        if exc.name != "ray":
            raise
        raise MicroscopeError("--executor ray needs Ray: pip install 'microscope[ray]'") from None

    groups = group_jobs(jobs)
    if not groups:
        return [], set()
    if isinstance(req.work_dir, os.PathLike):
        # Workers on other machines resolve the same path; a relative one would land in each worker's cwd.
        req = dataclasses.replace(req, work=os.path.abspath(req.work_dir))
    started_here = not ray.is_initialized()
    if started_here:
        env = {name: value for name, value in os.environ.items()
               if name in FORWARDED_ENV or name.startswith("FSSPEC_")}
        if req.address:
            ray.init(address=req.address, runtime_env={"env_vars": env}, log_to_driver=False)
        else:  # "local" starts a fresh cluster rather than joining one that `ray start` left on this machine
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        gpus = 1 if req.device.startswith("cuda") else 0
        task = ray.remote(run_jobs).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES,
                                            retry_exceptions=True)
        # Ray hands each GPU task its own device through CUDA_VISIBLE_DEVICES, where it is always cuda:0.
        worker_req = dataclasses.replace(req, progress=False, device="cuda" if gpus else req.device)
        geo_ref = ray.put(geo)
        refs = {task.remote(worker_req, group, geo_ref): group for group in groups}
        failed, unreadable = [], set()
        bar = tqdm(total=sum(len(g) for g in groups), desc="jobs (ray)", unit="job", disable=not req.progress)
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                try:
                    unreadable |= ray.get(ref)
                except ray.exceptions.RayError as exc:
                    # A pass task may have written some of its layer's shards before it failed: those count.
                    failed.extend(job.failure(_one_line(exc)) for job in refs[ref] if not job.done(req.work_dir))
                bar.update(len(refs[ref]))
        bar.close()
        return failed, unreadable
    finally:
        if started_here:
            ray.shutdown()


def _one_line(exc: BaseException) -> str:
    """The error as one line: for a job that raised, its own exception (Ray wraps it with the remote
    traceback); for a worker or node that died, Ray's first line, which says which."""
    import ray

    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else None
    return one_line(cause if isinstance(cause, BaseException) else exc)
