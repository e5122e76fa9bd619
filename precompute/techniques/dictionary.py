"""The `dictionary` technique: a TopK sparse dictionary of a layer's activation vectors (`precompute.sae`),
whose features become the layer `BASE/NAME` (`precompute.feature_layers`) for every other technique.

One streaming pass over the dataset (shared by the request's dictionary jobs) keeps, per layer, a bounded
uniform sample (reservoir) of the activation vectors at every map position (token vectors of a token
layer), and apart from it the vectors of a fixed held-out slice of the images (every HOLDOUT_EVERY-th
item): memory is bounded by RESERVOIR_FLOATS per layer, never by the dataset's length. Two dictionaries
are trained on the sample, with the request's seed and the next one; the first is the layer's, the second
measures each feature's stability (its best decoder cosine in the other).

Names: `topk8x` for an expansion (`--features 8x`, the default), `topk2048` for a count (`--features 2048`),
with `-k16` added where `--dict-k` sets a k other than the default for the layer's width (DEFAULT_K).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from precompute import sae
from precompute.dataset_pass import _batches
from precompute.feature_layers import is_feature_layer
from precompute.hooks import capture, run
from precompute.jobs import Job
from precompute.layers import as_maps
from precompute.techniques.base import Technique
from store.errors import MicroscopeError

DEFAULT_FEATURES = "8x"
MAX_EXPANSION = 64
MIN_UNITS = 4  # below this a layer's channels are few enough to read one by one: no dictionary is needed
RESERVOIR_FLOATS = 1 << 24  # per layer: 64 MB of float32, about 87,000 vectors of blocks.5 (192 channels)
MAX_VECTORS = 100_000
HOLDOUT_EVERY = 10  # dataset items 0, 10, 20, ... are held out for the explained variance
HOLDOUT_VECTORS = 20_000
EPOCHS = 10  # passes over the sample per dictionary, at most ...
MIN_STEPS, MAX_STEPS = 200, 2000
# ... and at most this many multiply-adds of the encoder per dictionary (batch x features x channels a step):
# about 35 s per seed on 2 CPU cores. blocks.5 (192 channels, 1536 features) gets 860 steps (5 epochs),
# blocks.3 (80, 640) its 10 epochs, 1954 steps; on blocks.3, stability across seeds rises from 23% of the
# features at 5 epochs to 30% at 10.
TRAIN_MACS = 1.3e11
# Paulo & Belrose 2025 ("Sparse Autoencoders Trained on the Same Data Learn Different Features") count a
# feature as shared by two seeds' dictionaries where their decoder cosine reaches 0.7; below it, one-seed only.
STABLE_COSINE = 0.7
DENSE_FREQUENCY = 0.1  # a feature active at more than a tenth of positions is dense (not a sparse feature)


class DictionaryError(MicroscopeError, ValueError):
    """A dictionary option or layer that cannot be used; one line for the user (exit status 2)."""

    exit_code = 2


def default_k(channels: int) -> int:
    """An eighth of the layer's width, at least 2 and at most 32 (Gao et al. 2024 train GPT-2 small's 768-wide
    residual stream with k = 32): a position is explained by a few features, fewer than the layer has channels."""
    return max(2, min(32, channels // 8))


def parse_features(text: str | None) -> tuple[str, int]:
    """("x", expansion) for `8x`, ("n", count) for `2048`; one line for anything else."""
    text = (text or DEFAULT_FEATURES).strip().lower()
    match = re.fullmatch(r"(\d+)(x?)", text)
    if not match:
        raise DictionaryError(f"bad --features {text!r}: expected an expansion such as 8x or a feature count "
                              "such as 2048")
    value = int(match.group(1))
    if match.group(2):
        if not 1 <= value <= MAX_EXPANSION:
            raise DictionaryError(f"--features {text} is out of range: the expansion must be 1x to {MAX_EXPANSION}x")
        return "x", value
    if value < 2:
        raise DictionaryError(f"--features {text} is out of range: a dictionary needs at least 2 features")
    return "n", value


def layout(channels: int, options: dict, layer: str) -> tuple[str, int, int]:
    """(name, features, k) of the dictionary of a layer of `channels` units, or one line saying what is wrong."""
    if channels < MIN_UNITS:
        raise DictionaryError(f"layer {layer} has {channels} channels, too few to need a dictionary (the minimum "
                              f"is {MIN_UNITS}): read its units directly")
    kind, value = parse_features(options.get("features"))
    features = channels * value if kind == "x" else value
    if features > MAX_EXPANSION * channels:
        raise DictionaryError(f"--features {value} is out of range for layer {layer}: at most "
                              f"{MAX_EXPANSION * channels} ({MAX_EXPANSION}x its {channels} channels)")
    k = options.get("dict_k") or default_k(channels)
    if not 1 <= k <= min(features, channels * 4):
        raise DictionaryError(f"--dict-k {k} is out of range for layer {layer}: 1 to {min(features, channels * 4)}")
    name = f"topk{value}x" if kind == "x" else f"topk{value}"
    if options.get("dict_k") and k != default_k(channels):
        name += f"-k{k}"
    return name, features, k


def training_steps(vectors: int, features: int, channels: int) -> int:
    """EPOCHS passes over the sample, within TRAIN_MACS, and between MIN_STEPS and MAX_STEPS."""
    epochs = math.ceil(EPOCHS * vectors / sae.BATCH)
    budget = int(TRAIN_MACS // (sae.BATCH * features * channels))
    return max(MIN_STEPS, min(MAX_STEPS, epochs, budget))


class Dictionary(Technique):
    name = "dictionary"
    VERSION = 2
    tables = ("dictionaries", "dictionary_features")
    unit_key = "direction"  # a feature's decoder vector; its dictionary's quality is under "dictionary"

    def params(self, req, spec) -> dict:
        parse_features(req.options.get("features"))
        return {"features": req.options.get("features") or DEFAULT_FEATURES, "dict_k": req.options.get("dict_k"),
                "dataset": req.dataset, "max_images": req.max_images, "reservoir_floats": RESERVOIR_FLOATS,
                "max_vectors": MAX_VECTORS, "holdout_every": HOLDOUT_EVERY, "epochs": EPOCHS,
                "steps": [MIN_STEPS, MAX_STEPS],
                "train_macs": TRAIN_MACS, "lr": sae.LEARNING_RATE, "batch": sae.BATCH, "seeds": 2}

    def plan(self, model_id: str, units_by_layer: dict[str, list[int]], params: dict) -> list[Job]:
        # A dictionary reads every channel of its layer, whatever --units says; none of a dictionary layer.
        from precompute.jobs import canonical

        return [Job(model_id, layer, self.name, 0, max(units) + 1, canonical(params))
                for layer, units in units_by_layer.items() if units and not is_feature_layer(layer)]

    def run(self, ctx, job: Job) -> dict[str, pa.Table]:
        layers = [name for name in ctx.layers if not is_feature_layer(name)]
        cache = ctx.cache.setdefault("dictionary", {})
        if job.layer not in cache:
            cache.update(collect(ctx, [name for name in layers if name not in cache] or [job.layer]))
        sample, held = cache.pop(job.layer)
        return tables(ctx, job, sample, held)


class Reservoir:
    """A uniform sample of at most `size` rows of everything added (Vitter's algorithm R, vectorised)."""

    def __init__(self, size: int, channels: int, seed: int):
        self.rows = np.zeros((size, channels), dtype=np.float32)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, rows: np.ndarray) -> None:
        size, n = len(self.rows), len(rows)
        fill = max(0, min(n, size - self.seen))
        self.rows[self.seen:self.seen + fill] = rows[:fill]
        if fill < n:
            ordinal = self.seen + np.arange(fill, n)  # rows seen before each remaining one
            slot = (self.rng.random(n - fill) * (ordinal + 1)).astype(np.int64)
            keep = slot < size
            self.rows[slot[keep]] = rows[fill:][keep]
        self.seen += n

    def sample(self) -> np.ndarray:
        return self.rows[:min(self.seen, len(self.rows))]


def collect(ctx, layers: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One pass over the dataset: per layer, (training sample, held-out vectors), each (rows, channels)."""
    spec, req = ctx.spec, ctx.request
    width = {name: spec.layer(name).units for name in layers}
    train = {n: Reservoir(min(MAX_VECTORS, RESERVOIR_FLOATS // c), c, req.seed) for n, c in width.items()}
    held = {n: Reservoir(HOLDOUT_VECTORS, c, req.seed + 1) for n, c in width.items()}
    bar = tqdm(total=len(ctx.dataset), desc=f"dictionary sample ({len(layers)} layers)", unit="img",
               disable=not req.progress)
    with capture(ctx.model, layers) as outputs, torch.inference_mode():
        for x, index in _batches(ctx.dataset, spec.input_size, spec.mean, spec.std, req.batch_size):
            acts = run(ctx.model, x.to(ctx.device), outputs)
            out = (index % HOLDOUT_EVERY == 0).numpy()
            for name in layers:
                maps = as_maps(acts[name]).float()
                vectors = maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1, maps.shape[1]).cpu().numpy()
                if (~out).any():
                    train[name].add(vectors[~out].reshape(-1, vectors.shape[-1]))
                if out.any():
                    held[name].add(vectors[out].reshape(-1, vectors.shape[-1]))
            bar.update(len(index))
    bar.close()
    return {name: (train[name].sample(), held[name].sample()) for name in layers}


def tables(ctx, job: Job, sample: np.ndarray, held: np.ndarray) -> dict[str, pa.Table]:
    spec, req = ctx.spec, ctx.request
    channels = spec.layer(job.layer).units
    name, features, k = layout(channels, req.options, job.layer)
    if len(sample) < features or len(held) == 0:
        raise DictionaryError(f"layer {job.layer}: the dataset gave {len(sample)} activation vectors to train "
                              f"and {len(held)} held out; a dictionary of {features} features needs at least "
                              f"{features} and some held out (use more images)")
    data = torch.from_numpy(sample).to(ctx.device)
    test = torch.from_numpy(held).to(ctx.device)
    steps = training_steps(len(sample), features, channels)
    first, info = sae.train(data, features, k, sae.Training(steps=steps), seed=req.seed)
    second, _ = sae.train(data, features, k, sae.Training(steps=steps), seed=req.seed + 1)
    q1, q2 = sae.quality(first, test), sae.quality(second, test)
    frequency = sae.quality(first, torch.cat([data, test]))["frequency"].numpy()
    directions = first.directions().cpu()
    cosine, match = sae.best_cosines(directions, second.directions().cpu())
    channel_cos, channel = sae.channel_match(directions)
    layer = f"{job.layer}/{name}"
    stable = cosine.numpy() >= STABLE_COSINE
    alive = frequency > 0
    head = pa.table({
        "model_id": [spec.id], "layer": [layer], "base_layer": [job.layer], "name": [name],
        "features": [features], "k": [k], "seed": [req.seed], "second_seed": [req.seed + 1],
        "explained_variance": [q1["explained_variance"]], "second_explained_variance": [q2["explained_variance"]],
        "mean_l0": [q1["mean_l0"]], "dead_share": [float((~alive).mean())],
        "dense_share": [float((frequency > DENSE_FREQUENCY).mean())],
        "stable_share": [float(stable[alive].mean()) if alive.any() else 0.0],
        "stability_median": [float(np.median(cosine.numpy()[alive])) if alive.any() else 0.0],
        "stable_cosine": [STABLE_COSINE], "positions": [len(sample)], "held_out_positions": [len(held)],
        "steps": [steps], "train_nmse": [info["train_nmse"]],
        "b_pre": pa.array([first.b_pre.cpu().tolist()], pa.list_(pa.float32())),
        "run_id": [job.key],
    })
    n = features
    rows = pa.table({
        "model_id": [spec.id] * n, "layer": [layer] * n, "unit": pa.array(range(n), pa.int32()),
        "direction": pa.array(directions.tolist(), pa.list_(pa.float32())),
        "encoder": pa.array(first.encoder.cpu().tolist(), pa.list_(pa.float32())),
        "encoder_bias": pa.array(first.b_enc.cpu().tolist(), pa.float32()),
        "frequency": frequency.astype(np.float64),
        "seed_cosine": cosine.numpy().astype(np.float64), "seed_match": pa.array(match.tolist(), pa.int32()),
        "stable": stable, "channel_cosine": channel_cos.numpy().astype(np.float64),
        "best_channel": pa.array(channel.tolist(), pa.int32()),
        "run_id": [job.key] * n,
    })
    return {"dictionaries": head, "dictionary_features": rows}


TECHNIQUE = Dictionary()
