"""The `local` executor: the request's jobs in this process, on the model the driver already loaded.

The pass techniques' jobs go first, all in one streaming pass over the dataset; then every other job, one
at a time, with a progress bar. The job function is the one every executor calls (`runner.run_jobs`).

A job that raises costs only itself: where the shared pass fails, each layer's pass runs alone, so a layer
whose model part or output cannot be read fails its own pass jobs only; any other job that raises is listed
and the rest go on. The failed jobs come back as the Ray executor reports them, for the driver to list.
"""

from __future__ import annotations

from collections import defaultdict

from tqdm import tqdm

from precompute.jobs import Job
from precompute.request import UsageError
from precompute.runner import Context, JobsFailed, installed, run_jobs
from precompute.techniques import TECHNIQUES
from store.errors import one_line


def run(ctx: Context, jobs: list[Job]) -> tuple[list[dict], set[int]]:
    """Runs the jobs; returns the failed ones, as {"key", "label", "error"} (one line each), and the indices of
    the dataset items found unreadable, as `ray_executor.run` does."""
    req = ctx.request
    failed: list[dict] = []
    with installed(ctx):
        shared = [job for job in jobs if TECHNIQUES[job.technique].shares_pass]
        if shared and not _attempt(ctx, shared, failed, keep_going=False):
            # Per layer, and apart from the techniques that need the model's predictions (whose pass runs the
            # whole model, past a part that may be what fails).
            by_layer: dict[tuple, list[Job]] = defaultdict(list)
            for job in shared:
                by_layer[job.layer, TECHNIQUES[job.technique].needs_predictions].append(job)
            for group in by_layer.values():
                _attempt(ctx, group, failed)
        alone = [job for job in jobs if not TECHNIQUES[job.technique].shares_pass]
        for job in tqdm(alone, desc="jobs", unit="job", disable=not req.progress):
            _attempt(ctx, [job], failed)
    return failed, set(ctx.dataset.unreadable)


def _attempt(ctx: Context, jobs: list[Job], failed: list[dict], keep_going: bool = True) -> bool:
    """Runs the jobs; False where they raised. Jobs that raised while others of the pass were written
    (`JobsFailed`) are listed at once; otherwise, with `keep_going`, every job of the group left without a shard
    is, and without it the caller retries the group in smaller parts. A bad request stops the run."""
    try:
        run_jobs(ctx.request, tuple(jobs), ctx.geometry)
        return True
    except (UsageError, KeyboardInterrupt):
        raise
    except JobsFailed as exc:
        failed.extend(exc.failures)
        return True
    except Exception as exc:  # noqa: BLE001 - a model's own error, of any type: it costs these jobs only
        if keep_going:
            work = ctx.request.work_dir
            failed.extend(job.failure(one_line(exc)) for job in jobs if not job.done(work))
        return False
