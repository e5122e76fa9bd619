"""The `featurevis` technique: the images a unit wants to see, rendered many units per optimisation.

Per unit: `channel` (SEEDS pictures from independent starts, facets 0 and 1), `neuron` (centre position),
`negative` (what it most dislikes) and `diversity` (FACETS images of one unit pushed apart). Per layer (in the
job that holds the layer's unit 0): `deepdream` and a `caricature` of each of CARICATURE_PHOTOS. Each image
keeps the objective's score on its final image (`achieved`) and its unit's spatial max (the `stats` measure),
so a page can set it against the unit's top dataset activation; `featurevis_trust` keeps, per unit, how far
the two seeds' channel pictures agree and the unit's path on its picture (store.trust reads them).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from PIL import Image

from precompute import paths
from precompute.jobs import Job
from precompute.optvis import objectives as obj
from precompute.optvis import render as rd
from precompute.optvis.errors import RenderError
from precompute.optvis.presets import Preset, effective_window, preset_settings
from precompute.techniques.base import Technique
from store import pictures, trust

UNIT_OBJECTIVES = ("channel", "neuron", "negative")
FACETS = 4  # diversity images per unit
SEEDS = 2  # channel pictures per unit, from independent starts: their agreement is a trust signal (store.trust)
DIVERSITY_WEIGHT = 1.0  # Lucid's diversity recipe weighs the channel and diversity terms equally
CARICATURE_PHOTOS = ("coffee", "chelsea", "astronaut")  # scikit-image photographs, bundled with its wheel
THUMB_PX = 96


def settings(options: dict) -> Preset:
    """The named preset (`quick` by default) with the command line's size, steps and window laid over it."""
    overrides = {k: options[k] for k in ("size", "steps", "window") if options.get(k) is not None}
    if overrides.get("steps", 1) <= 0 or overrides.get("size", 1) <= 0:
        raise RenderError("steps and size must be positive")
    return preset_settings(options.get("preset") or "quick", overrides)


def objectives(options: dict) -> tuple[str, ...]:
    """The unit pictures a run renders: all of them, or with `gallery` the channel pictures alone (both seeds,
    so their trust signals too), which is what a layer's gallery shows, at about a quarter of the cost."""
    return ("channel",) if options.get("gallery") else (*UNIT_OBJECTIVES, "diversity")


class FeatureVis(Technique):
    name = "featurevis"
    # 2: the quick preset renders pooled objectives through random half-side windows; 3: batch norm is folded by
    # torch's fuse_conv_bn_weights, which rounds differently (achieved activations move in the fourth digit)
    # 4: issue 15: windows under MIN_WINDOW_PX input pixels show the whole view; a second seed's channel picture
    # (facet 1), every picture's spatial max, and the trust table; 5: the trust table keeps the unit's path on its
    # picture (precompute.paths) instead of the layer's profile
    VERSION = 5
    tables = ("featurevis", "featurevis_trust", "thumbnails", "layer_visuals")
    unit_key = "featurevis"

    def params(self, req, spec) -> dict:
        preset = settings(req.options)
        # The window the steps really see (presets.effective_window), so that a page says what was done.
        knobs = {**preset.knobs(), "window": effective_window(preset.window, spec.input_size)}
        return {"preset": req.options.get("preset") or "quick", **knobs, "facets": FACETS, "seeds": SEEDS,
                "caricatures": list(CARICATURE_PHOTOS), "objectives": list(objectives(req.options))}

    def run(self, ctx, job: Job) -> dict[str, pa.Table]:
        return render_job(ctx, job)


def render_job(ctx, job: Job) -> dict[str, pa.Table]:
    """The unit images of the job's units, their thumbnails, and the layer's visuals in its first job."""
    preset = settings(ctx.request.options)
    spec, layer, seed = ctx.spec, job.layer, ctx.request.seed
    units = list(range(job.unit_start, job.unit_stop))
    knobs = preset.knobs()
    rows: dict[str, list] = {k: [] for k in ("unit", "technique", "facet", "image", "achieved")}
    pixels: list[np.ndarray] = []

    def add(unit, technique, facet, image, score):
        rows["unit"].append(unit)
        rows["technique"].append(technique)
        rows["facet"].append(facet)
        rows["image"].append(pictures.encode(Image.fromarray(image)))
        rows["achieved"].append(float(score))
        pixels.append(image)

    measure = dict(input_size=spec.input_size, mean=spec.mean, std=spec.std, device=ctx.device)
    channel_images, trust_table = None, None
    chosen = objectives(ctx.request.options)
    for objective in (o for o in UNIT_OBJECTIVES if o in chosen):
        copies = SEEDS if objective == "channel" else 1
        images, scores = rd.render_units(ctx.model, spec, layer, units, preset=preset, objective=objective,
                                         seed=seed, device=ctx.device, copies=copies)
        if objective == "channel":
            channel_images = images[0]
            trust_table = trust_rows(ctx, job, images, **measure)
            for copy in range(SEEDS):
                for unit, image, score in zip(units, images[copy], scores[copy]):
                    add(unit, objective, copy, image, score)
        else:
            for unit, image, score in zip(units, images, scores):
                add(unit, objective, 0, image, score)
    for start in range(0, len(units) if "diversity" in chosen else 0, max(1, 8 // FACETS)):
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

    rows["spatial_max"] = spatial_max(ctx.model, layer, rows["unit"], np.stack(pixels), **measure)
    n = len(rows["unit"])
    tables = {
        "featurevis_trust": trust_table,
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


def profiles(model, layer: str, images: np.ndarray, **measure) -> np.ndarray:
    """The layer's profile on each image (store.trust): every unit's spatial max, (B, C) float32."""
    maps = rd.activations(model, [layer], images, **measure)[layer]
    return maps.amax(dim=(-2, -1)).cpu().numpy()


def spatial_max(model, layer: str, units: list[int], images: np.ndarray, **measure) -> list[float]:
    """Each image's spatial max of its unit: the measure `stats` keeps for dataset images."""
    values = profiles(model, layer, images, **measure)
    return [float(values[i, u]) for i, u in enumerate(units)]


def trust_rows(ctx, job: Job, images: np.ndarray, **measure) -> pa.Table:
    """Per unit: the correlation of its two seeds' pictures' profiles, the highest correlation of that first
    picture with another unit's second picture in this job (the baseline), and the unit's path on its first
    picture (precompute.paths, at its strongest cell), which store.trust sets against its top examples'.

    `images` is (SEEDS, units, H, W, 3) from render_units(copies=SEEDS)."""
    units = list(range(job.unit_start, job.unit_stop))
    first = profiles(ctx.model, job.layer, images[0], **measure)
    second = profiles(ctx.model, job.layer, images[1], **measure)
    # What two different units' pictures reach: the closest any other unit's second picture comes to this one's
    # first (None in a job of one unit).
    baseline = [max((c for j, b in enumerate(second) if j != i if (c := trust.correlation(a, b)) is not None),
                    default=None) for i, a in enumerate(first)]
    inputs = rd.model_input(images[0], **measure)  # each picture as its render steps fed it to the model
    shares = paths.contributions(ctx.model, inputs.__getitem__,
                                 {job.layer: [(i, u, None) for i, u in enumerate(units)]})[job.layer]
    return pa.table({
        "model_id": [ctx.spec.id] * len(units), "layer": [job.layer] * len(units), "unit": units,
        "seed_agreement": pa.array([trust.correlation(a, b) for a, b in zip(first, second)], type=pa.float64()),
        "seed_baseline": pa.array(baseline, type=pa.float64()),
        "path": pa.array([None] * len(units) if shares is None else [trust.encode(s) for s in shares],
                         type=pa.binary()),
        "run_id": [job.key] * len(units),
    })


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
