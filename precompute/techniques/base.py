"""The technique contract: what every technique declares, and the two ways its jobs run.

A technique is one module of `precompute/techniques/` holding one subclass of `Technique` (or of
`PassTechnique`), instantiated once and listed in the registry (`precompute.techniques.TECHNIQUES`).
It declares:

- `name`: the technique's id, as in `--techniques`, in job keys and in the store's `runs.technique`.
- `VERSION`: bumped whenever the technique's results change for the same inputs; it is part of every job's
  params, so a new version recomputes every shard (a rerun with the old one finds them all done).
- `params(req, spec) -> dict`: the settings of the request that determine the result, besides what every
  job's params hold anyway (seed, the model's weights, input size and normalisation, `VERSION`, and for a
  `PassTechnique` the pass's own settings: see `precompute.runner.pass_params`). Params are hashed into the
  job key: anything that changes the result must be here, anything that does not must not.
- `tables`: the store tables (in `store/schema.sql`) that its shards fill, each row keyed by its job's
  `run_id` (the dataset technique's `images` listing aside, which names the image files it wrote); the runner
  refuses a shard with any other table.
- `unit_key`: the key its results take in `microscope unit --json` (the reading side is `store.queries`).
- `plan(model_id, units_by_layer, params) -> [Job]`: its jobs; by default `jobs.plan`'s chunks of at most
  `jobs.UNIT_CHUNK` contiguous units per layer.

and computes its rows one of two ways:

- a job that runs alone: `run(ctx, job) -> {table: pyarrow.Table}`;
- a `PassTechnique`, whose jobs share one streaming pass over the dataset (every unit of every pending
  layer at once, `precompute.dataset_pass`): `from_pass(ctx, job, record) -> {table: pyarrow.Table}`,
  the rows of the job's units from the pass's `LayerRecord` of the job's layer. A pass technique that sets
  `needs_predictions` makes the pass run the model to its output and keep, beside each top and bottom image,
  the class the model predicts for it (`Extremes.pred`); otherwise the pass stops after the deepest layer.
  `after_pass(ctx, jobs, records)` runs first, once for all its jobs of the pass (the dataset technique reads
  the paths of every layer's top examples there, in one more forward per image).

`ctx` is the runner's `Context` (`precompute.runner`): `model`, `spec`, `geometry` ({layer: Geometry}),
`dataset`, `device`, `request`, `layers` (the layers the request names, in model order) and `cache` (a dict
for work that the jobs of one request share, such as a stimulus pass). A technique may write files into the
work folder (`ctx.request.work_dir`) besides its tables, as the dataset technique writes the images its rows
name; the tables are written as the job's shard by the runner, never by the technique.

Adding a technique: its module here with its subclass, one line in the registry, its table in
`store/schema.sql`, its reading in `store.queries` under `unit_key`, its lens, and its tests.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from precompute.jobs import Job, plan


class Technique:
    """A technique whose jobs each run alone (see the module docstring for the contract)."""

    name: ClassVar[str]
    VERSION: ClassVar[int]
    tables: ClassVar[tuple[str, ...]]
    unit_key: ClassVar[str]
    shares_pass: ClassVar[bool] = False

    def params(self, req, spec) -> dict:
        return {}

    def plan(self, model_id: str, units_by_layer: dict[str, list[int]], params: dict) -> list[Job]:
        return plan(model_id, units_by_layer, [self.name], {self.name: params})

    def run(self, ctx, job: Job) -> dict[str, pa.Table]:
        raise NotImplementedError(f"technique {self.name} has no run()")

    def __repr__(self) -> str:
        return f"<technique {self.name} v{self.VERSION}>"


class PassTechnique(Technique):
    """A technique whose rows come from the shared streaming pass over the dataset."""

    shares_pass: ClassVar[bool] = True
    needs_predictions: ClassVar[bool] = False

    def after_pass(self, ctx, jobs: list[Job], records: dict) -> None:
        """Work that the technique's jobs of one pass share, done once after the pass and before any of their
        `from_pass` calls, which find it in `ctx.cache`; `records` holds every layer's `LayerRecord`. None by
        default."""

    def from_pass(self, ctx, job: Job, record) -> dict[str, pa.Table]:
        raise NotImplementedError(f"technique {self.name} has no from_pass()")
