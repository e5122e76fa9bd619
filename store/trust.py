"""How far to trust a unit's feature visualisation: the signals derived from what featurevis and dataset store.

A unit's *profile* on an image is the layer's activation pattern on it: the spatial max of every unit of the
layer (the statistic `stats` keeps, so pictures and dataset examples are measured alike), as a float16 vector.
Its *path* on an image is what each channel of the layer's input adds to the unit's activation at the unit's
strongest position (precompute.paths: gradient times input), also float16.

- `natural_range`: the picture's spatial max against the unit's top dataset example, and its position in the
  unit's distribution over dataset images, in standard deviations (stats' mean and std of the spatial max).
- seed agreement: the correlation of the profiles of the unit's channel pictures from two seeds. Two pictures
  that the model processes alike agree whatever they look like; they disagree when another unit's picture
  comes at least as close (`seed_baseline`, see below).
- natural path (Geirhos et al. 2023, "Don't trust your eyes: on the (un)reliability of feature
  visualizations", arXiv:2306.04719): the cosine of the unit's path on the picture with its mean path on its
  top dataset examples. Its bar is the unit's own: the lowest cosine of one top example's path with the mean
  path of the others (`natural_floor`). A picture whose activation comes from the unit's inputs less like the
  top examples' than each of them is like the rest drives the unit by a path natural images do not take.
  Only the inputs the unit reads carry a share, so whatever the picture does to inputs the unit ignores does
  not count.

Pure numpy, used at query time (store.queries.featurevis) and by the techniques that store the
profiles and paths; no SQL here.
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
    return cosine(a - a.mean(), b - b.mean())


def cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cosine of two paths; None where either is zero or their lengths differ. Not centred: a channel that
    adds nothing is a meaningful zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.size == 0:
        return None
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return None if norm == 0 else float(a @ b) / norm


def natural_floor(paths: np.ndarray) -> float | None:
    """The lowest cosine of one top example's path with the mean path of the others (n, C_in); None under
    three examples."""
    paths = np.asarray(paths, np.float64)
    n = len(paths)
    if n < 3:
        return None
    total = paths.sum(axis=0)
    values = [cosine(p, (total - p) / (n - 1)) for p in paths]
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
            picture_path: bytes | None, top_path: bytes | None, floor: float | None,
            seed_baseline: float | None = None) -> dict:
    """The trust record of one unit's channel picture (see the module docstring for each key)."""
    p, t = decode(picture_path), decode(top_path)
    natural = None if p is None or t is None else cosine(p, t)
    return {
        "measure": "spatial max",
        **natural_range(picture_max, stats),
        "seed_agreement": seed_agreement,
        "seed_baseline": seed_baseline,
        "seeds_disagree": None if seed_agreement is None or seed_baseline is None else seed_agreement <= seed_baseline,
        "natural_path": natural,
        "natural_floor": floor,
        # Rounded: a unit that reads one input has paths that are all parallel, cosine 1 give or take the last bit.
        "unnatural_path": None if natural is None or floor is None else round(natural, 6) < round(floor, 6),
    }
