"""The `ray` executor: the same jobs and the same job function as the local executor, as Ray tasks.

Ray does the scheduling, the GPU placement and the retries; this module only submits tasks, shows progress
and collects the jobs that failed. Workers write shards straight into the work folder (a shared path or an
object-store URL) and never open the store: the driver ingests once every task has ended.
"""

from __future__ import annotations

import dataclasses
import os

from tqdm import tqdm

from precompute.jobs import Job
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


def _job_task(req, jobs: tuple[Job, ...], geo) -> int:
    from precompute.pipeline import run_jobs

    run_jobs(req, jobs, geo)
    return len(jobs)


def run(req, groups: list[tuple[Job, ...]], geo) -> list[dict]:
    """Runs every group of jobs as one Ray task; returns the jobs that failed after their retries, as
    {"key", "label", "error"} (one line each), having let every other task finish."""
    try:
        import ray
    except ModuleNotFoundError as exc:  # Ray is an extra; a broken install of it (another name) is reported as is
        if exc.name != "ray":
            raise
        raise MicroscopeError("--executor ray needs Ray: pip install 'microscope[ray]'") from None

    if not groups:
        return []
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
        task = ray.remote(_job_task).options(num_cpus=1, num_gpus=gpus, max_retries=MAX_RETRIES,
                                             retry_exceptions=True)
        # Ray hands each GPU task its own device through CUDA_VISIBLE_DEVICES, where it is always cuda:0.
        worker_req = dataclasses.replace(req, progress=False, device="cuda" if gpus else req.device)
        geo_ref = ray.put(geo)
        refs = {task.remote(worker_req, group, geo_ref): group for group in groups}
        failed = []
        bar = tqdm(total=sum(len(g) for g in groups), desc="jobs (ray)", unit="job", disable=not req.progress)
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    # A pass task may have written some of its layer's shards before it failed: those count.
                    failed.extend({"key": job.key, "label": job.label(), "error": _one_line(exc)}
                                  for job in refs[ref] if not job.done(req.work_dir))
                bar.update(len(refs[ref]))
        bar.close()
        return failed
    finally:
        if started_here:
            ray.shutdown()


def _one_line(exc: BaseException) -> str:
    """The error as one line: for a job that raised, its own exception (Ray wraps it with the remote
    traceback); for a worker or node that died, Ray's first line, which says which."""
    import ray

    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else None
    return one_line(cause if isinstance(cause, BaseException) else exc)
