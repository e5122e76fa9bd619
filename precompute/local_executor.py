"""The `local` executor: the request's jobs in this process, on the model the driver already loaded.

The pass techniques' jobs go first, all in one streaming pass over the dataset; then every other job, one
at a time, with a progress bar. The job function is the one every executor calls (`runner.run_jobs`).
"""

from __future__ import annotations

from tqdm import tqdm

from precompute.jobs import Job
from precompute.runner import Context, installed, run_jobs
from precompute.techniques import TECHNIQUES


def run(ctx: Context, jobs: list[Job]) -> tuple[list[dict], set[int]]:
    """Runs the jobs; returns the failed ones (always none: here an error ends the run) and the indices of the
    dataset items found unreadable, as `ray_executor.run` does."""
    req = ctx.request
    with installed(ctx):
        shared = tuple(job for job in jobs if TECHNIQUES[job.technique].shares_pass)
        if shared:
            run_jobs(req, shared, ctx.geometry)
        alone = [job for job in jobs if not TECHNIQUES[job.technique].shares_pass]
        for job in tqdm(alone, desc="jobs", unit="job", disable=not req.progress):
            run_jobs(req, (job,), ctx.geometry)
    return [], set(ctx.dataset.unreadable)
