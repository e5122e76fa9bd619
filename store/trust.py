"""How far to trust a unit's feature visualisation: the signals derived from what featurevis and dataset store.

A unit's *profile* on an image is the layer's activation pattern on it: the spatial max of every unit of the
layer (the statistic `stats` keeps, so pictures and dataset examples are measured alike), as a float16 vector.

- `natural_range`: the picture's spatial max against the unit's top dataset example, and its position in the
  unit's distribution over dataset images, in standard deviations (stats' mean and std of the spatial max).
- seed agreement: the correlation of the profiles of the unit's channel pictures from two seeds. Two pictures
  that the model processes alike agree whatever they look like; they disagree when another unit's picture
  comes at least as close (`seed_baseline`, see below).
- natural path (Geirhos et al. 2023, "Don't trust your eyes: on the (un)reliability of feature
  visualizations", arXiv:2306.04719): the correlation of the picture's profile with the mean profile of the
  unit's top dataset examples, both standardised by each unit's dataset spread (`standardise`). Its bar is
  the unit's own: the lowest correlation of any one top example with the mean of the others
  (`natural_floor`). A picture less like the top examples than each of them is like the
  rest drives the unit by a path natural images do not take.

Pure numpy, used at query time (store.queries.featurevis) and by the techniques that store the
profiles; no SQL here.
"""

from __future__ import annotations

import math

import numpy as np

# The raw correlation of two pictures' profiles is high whatever they show: on EfficientNet-Lite0 blocks.1 at the
# quick preset (8 units spread over the layer, two seeds each) the two seeds of a unit correlated at 0.93-0.99,
# but so did pictures of different units (median 0.84, up to 0.95): every picture drives much of the layer. So
# a unit's seeds are judged against what different units reach in the same job (`seed_baseline`, stored beside
# the agreement): they disagree when the second seed's picture is no closer to the first than another unit's
# picture is.


def encode(profile: np.ndarray) -> bytes:
    return np.asarray(profile, dtype=np.float16).tobytes()


def decode(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float16).astype(np.float64)


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two profiles; None where either is constant or their lengths differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.size < 2:
        return None
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return None if norm == 0 else float(a @ b) / norm


def standardise(profile: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A profile in each unit's own dataset spread (stats' mean and std of the spatial max): a unit that rarely
    moves counts as much when it does as a unit that always responds, so that a pattern is not just the few
    loudest units. Dead units (std 0) count 0."""
    std = np.asarray(std, np.float64)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (np.asarray(profile, np.float64) - mean) / safe, 0.0)


def natural_floor(profiles: np.ndarray) -> float | None:
    """The lowest correlation of one top example's profile with the mean profile of the others (n, C),
    profiles standardised (`standardise`)."""
    profiles = np.asarray(profiles, np.float64)
    n = len(profiles)
    if n < 3:
        return None
    total = profiles.sum(axis=0)
    values = [correlation(p, (total - p) / (n - 1)) for p in profiles]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def natural_range(picture_max: float | None, stats: dict | None) -> dict:
    """The picture's spatial max against the unit's dataset distribution (stats' row, or None)."""
    top = stats.get("max") if stats else None
    std = stats.get("std") if stats else None
    out = {"picture_max": picture_max, "top_example": top, "ratio_to_top": None, "sigma": None}
    if picture_max is None:
        return out
    if top:
        out["ratio_to_top"] = picture_max / top
    if std:
        out["sigma"] = (picture_max - stats["mean"]) / std
    return out


def signals(picture_max: float | None, stats: dict | None, seed_agreement: float | None,
            picture_profile: bytes | None, top_profile: bytes | None, floor: float | None,
            layer_mean: np.ndarray | None = None, layer_std: np.ndarray | None = None,
            seed_baseline: float | None = None) -> dict:
    """The trust record of one unit's channel picture (see the module docstring for each key). `layer_mean` and
    `layer_std`: every unit's dataset spread (the dataset technique's `profile_spread`), to standardise with."""
    natural = None
    p, t = decode(picture_profile), decode(top_profile)
    if p is not None and t is not None and layer_mean is not None and len(p) == len(t) == len(layer_mean):
        natural = correlation(standardise(p, layer_mean, layer_std), standardise(t, layer_mean, layer_std))
    return {
        "measure": "spatial max",
        **natural_range(picture_max, stats),
        "seed_agreement": seed_agreement,
        "seed_baseline": seed_baseline,
        "seeds_disagree": None if seed_agreement is None or seed_baseline is None else seed_agreement <= seed_baseline,
        "natural_path": natural,
        "natural_floor": floor,
        "unnatural_path": None if natural is None or floor is None else natural < floor,
    }
