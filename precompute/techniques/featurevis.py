"""The `featurevis` technique: the images a unit wants to see, rendered many units per optimisation.

Per unit: `channel`, `neuron` (centre position), `negative` (what it most dislikes) and `diversity` (FACETS
images of one unit pushed apart). Per layer (in the job that holds the layer's unit 0): `deepdream` and a
`caricature` of each of CARICATURE_PHOTOS. Each image keeps the objective's score on its final image
(`achieved`), so a page can set it against the unit's top dataset activation.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image

from precompute.jobs import Job
from precompute.optvis import objectives as obj
from precompute.optvis import render as rd
from precompute.optvis.errors import RenderError
from precompute.optvis.presets import Preset, preset_settings
from precompute.techniques.base import Technique
from store import pictures

UNIT_OBJECTIVES = ("channel", "neuron", "negative")
FACETS = 4  # diversity images per unit
DIVERSITY_WEIGHT = 1.0  # Lucid's diversity recipe weighs the channel and diversity terms equally
CARICATURE_PHOTOS = ("coffee", "chelsea", "astronaut")  # scikit-image photographs, bundled with its wheel
THUMB_PX = 96


def settings(options: dict) -> Preset:
    """The named preset (`quick` by default) with the command line's size, steps and window laid over it."""
    overrides = {k: options[k] for k in ("size", "steps", "window") if options.get(k) is not None}
    if overrides.get("steps", 1) <= 0 or overrides.get("size", 1) <= 0:
        raise RenderError("steps and size must be positive")
    return preset_settings(options.get("preset") or "quick", overrides)


class FeatureVis(Technique):
    name = "featurevis"
    # 2: the quick preset renders pooled objectives through random half-side windows; 3: batch norm is folded by
    # torch's fuse_conv_bn_weights, which rounds differently (achieved activations move in the fourth digit)
    VERSION = 3
    tables = ("featurevis", "thumbnails", "layer_visuals")
    unit_key = "featurevis"

    def params(self, req, spec) -> dict:
        preset = settings(req.options)
        return {"preset": req.options.get("preset") or "quick", **preset.knobs(), "facets": FACETS,
                "caricatures": list(CARICATURE_PHOTOS)}

    def run(self, ctx, job: Job) -> dict[str, pa.Table]:
        return render_job(ctx, job)


def render_job(ctx, job: Job) -> dict[str, pa.Table]:
    """The unit images of the job's units, their thumbnails, and the layer's visuals in its first job."""
    preset = settings(ctx.request.options)
    spec, layer, seed = ctx.spec, job.layer, ctx.request.seed
    units = list(range(job.unit_start, job.unit_stop))
    knobs = preset.knobs()
    rows: dict[str, list] = {k: [] for k in ("unit", "technique", "facet", "image", "achieved")}

    def add(unit, technique, facet, image, score):
        rows["unit"].append(unit)
        rows["technique"].append(technique)
        rows["facet"].append(facet)
        rows["image"].append(pictures.encode(Image.fromarray(image)))
        rows["achieved"].append(float(score))

    channel_images = None
    for objective in UNIT_OBJECTIVES:
        images, scores = rd.render_units(ctx.model, spec, layer, units, preset=preset, objective=objective,
                                         seed=seed, device=ctx.device)
        for unit, image, score in zip(units, images, scores):
            add(unit, objective, 0, image, score)
        if objective == "channel":
            channel_images = images
    for start in range(0, len(units), max(1, 8 // FACETS)):
        chunk = units[start:start + max(1, 8 // FACETS)]
        repeated = [u for u in chunk for _ in range(FACETS)]
        objective = obj.channels(layer, repeated) + DIVERSITY_WEIGHT * obj.diversity(layer, group=FACETS)
        images, _ = rd.render(ctx.model, objective, [layer], seed=seed, device=ctx.device,
                              input_size=spec.input_size, mean=spec.mean, std=spec.std,
                              keys=[u * FACETS + f for u in chunk for f in range(FACETS)], **knobs)
        scores = rd.achieved(ctx.model, obj.channels(layer, repeated), images, input_size=spec.input_size,
                             mean=spec.mean, std=spec.std, device=ctx.device)
        for i, (image, score) in enumerate(zip(images, scores)):
            add(repeated[i], "diversity", i % FACETS, image, score)

    n = len(rows["unit"])
    tables = {
        "featurevis": pa.table({"model_id": [spec.id] * n, "layer": [layer] * n, **{
            k: (pa.array(v, type=pa.binary()) if k == "image" else v) for k, v in rows.items()},
            "run_id": [job.key] * n}),
        "thumbnails": pa.table({
            "model_id": [spec.id] * len(units), "layer": [layer] * len(units), "unit": units,
            "technique": ["channel"] * len(units), "format": ["webp"] * len(units),
            "data": pa.array([pictures.encode(Image.fromarray(im).resize((THUMB_PX, THUMB_PX), Image.BICUBIC))
                              for im in channel_images], type=pa.binary()),
            "run_id": [job.key] * len(units)}),
    }
    if job.unit_start == 0:
        tables["layer_visuals"] = layer_visuals(ctx, job, preset)
    return tables


def layer_visuals(ctx, job: Job, preset: Preset) -> pa.Table:
    """DeepDream of the layer and caricatures of the bundled photos: one optimisation of 1 + N images."""
    import skimage.data

    from precompute.datasets import square

    spec, layer = ctx.spec, job.layer
    photos = np.stack([np.asarray(square(Image.fromarray(getattr(skimage.data, name)()), preset.size))
                       for name in CARICATURE_PHOTOS])
    targets = rd.activations(ctx.model, [layer], photos, input_size=spec.input_size, mean=spec.mean,
                             std=spec.std, device=ctx.device)[layer]
    knobs = {**preset.knobs(), "seed": ctx.request.seed, "device": ctx.device,
             "input_size": spec.input_size, "mean": spec.mean, "std": spec.std}
    dream, dream_score = rd.render(ctx.model, obj.deepdream(layer), [layer], batch=1, **knobs)
    caric, caric_score = rd.render(ctx.model, obj.caricature(layer, targets), [layer],
                                   keys=list(range(1, 1 + len(CARICATURE_PHOTOS))), **knobs)
    images = [dream[0], *caric]
    n = len(images)
    return pa.table({
        "model_id": [spec.id] * n, "layer": [layer] * n,
        "technique": ["deepdream"] + ["caricature"] * len(CARICATURE_PHOTOS),
        "facet": list(range(n)), "source": [""] + [f"skimage.{p}" for p in CARICATURE_PHOTOS],
        "image": pa.array([pictures.encode(Image.fromarray(im)) for im in images], type=pa.binary()),
        "source_image": pa.array([None] + [pictures.encode(Image.fromarray(p)) for p in photos], type=pa.binary()),
        "achieved": [float(dream_score[0]), *map(float, caric_score)],
        "run_id": [job.key] * n,
    })


TECHNIQUE = FeatureVis()
