"""How alike two units respond: the correlation of their responses to the same dataset images (the `similar`
technique's samples, precompute/techniques/similar.py), and what follows from it.

- `derive(con)`, run by ingest once every shard is in: for every unit of the store, its most similar units in
  the same layer, in the model's other layers and in each other model (`similar_units`), and for every pair of
  layers of the store their linear CKA (`layer_similarity`). Both are rebuilt with the store, so a model added
  later is compared with every model already there.
- `match(a, b)`: the one-to-one matching of two layers' units that maximises the summed correlation, for the
  compare view.

The score of two units is the Pearson correlation of their spatial-max responses over the images both were
shown. A layer's CKA is linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations
Revisited") of the two layers' response matrices with every unit standardised, so that each unit counts
equally whatever its scale: ||C_ab||^2 / (||C_aa|| ||C_bb||) in the Frobenius norm, C being correlation
matrices. Units whose response does not vary (dead units) have no correlation and are left out of both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

DERIVED = ("similar_units", "layer_similarity")  # the tables `derive` fills
TOP = 10  # neighbours kept per unit: in its layer, in the model's other layers, and in each other model
MIN_IMAGES = 16  # fewer shared images than this make no correlation worth showing
GOOD_MATCH = 0.5  # a matched pair correlating at least this much counts as a good match in the compare view


@dataclass
class Block:
    """The sampled responses of one run's units of one layer: `values` is (units, images)."""

    model_id: str
    layer: str
    dataset: str
    images: np.ndarray
    units: np.ndarray
    values: np.ndarray
    _z: np.ndarray | None = field(default=None, repr=False)

    def standardised(self) -> np.ndarray:
        """Rows scaled so that the dot product of two rows is their correlation; NaN rows for dead units."""
        if self._z is None:
            self._z = standardise(self.values)
        return self._z


def standardise(values: np.ndarray) -> np.ndarray:
    centred = values.astype(np.float64) - values.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=1, keepdims=True))
    flat = norm[:, 0] <= 1e-6 * (1.0 + np.abs(values).max(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (centred / norm).astype(np.float32)
    z[flat] = np.nan
    return z


def blocks_from(samples: pd.DataFrame, responses: pd.DataFrame) -> list[Block]:
    """Blocks from the runs' samples (run_id, dataset, images) and the units' rows (model_id, layer, run_id, unit,
    responses as float16 bytes): one block per layer and image sample, so that a layer's runs over the same
    images make one block."""
    sample_of = {r.run_id: (r.dataset, tuple(r.images)) for r in samples.itertuples(index=False)}
    distinct: dict[tuple, int] = {}  # each distinct (dataset, images) sample, numbered: runs sharing one group
    responses = responses.assign(sample=responses["run_id"].map(
        lambda run: distinct.setdefault(sample_of[run], len(distinct))))
    out = []
    for _, rows in responses.groupby(["model_id", "layer", "sample"], sort=False):
        first = rows.iloc[0]
        dataset, images = sample_of[first["run_id"]]
        values = np.frombuffer(b"".join(rows["responses"]), dtype="<f2").reshape(len(rows), -1).astype(np.float32)
        out.append(Block(first["model_id"], first["layer"], dataset, np.asarray(images, dtype=np.int64),
                         rows["unit"].to_numpy(np.int64), values))
    return out


def correlations(a: Block, b: Block) -> np.ndarray | None:
    """(a units, b units) correlations over the images both saw; None when they share too few."""
    if a.dataset != b.dataset or min(len(a.images), len(b.images)) < MIN_IMAGES:
        return None
    if len(a.images) == len(b.images) and np.array_equal(a.images, b.images):
        za, zb = a.standardised(), b.standardised()
    else:
        common, ia, ib = np.intersect1d(a.images, b.images, assume_unique=True, return_indices=True)
        if len(common) < MIN_IMAGES:
            return None
        za, zb = standardise(a.values[:, ia]), standardise(b.values[:, ib])
    return np.clip(za @ zb.T, -1.0, 1.0)


def _strongest(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the k highest finite scores of each row."""
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    k = min(k, scores.shape[1])
    cols = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(scores.shape[0]), k)
    cols = cols.ravel()
    keep = np.isfinite(scores[rows, cols])
    return rows[keep], cols[keep]


def _scope(a: Block, b: Block) -> tuple[str, str]:
    """Where b's units stand from a's: (scope, other model); neighbours are kept per scope and other model."""
    if b.model_id != a.model_id:
        return "store", b.model_id
    return ("layer" if b.layer == a.layer else "model"), a.model_id


def neighbours_and_cka(blocks: list[Block], top: int = TOP, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Each unit's `top` most similar units per scope (and other model), strongest first, and for every
    ordered pair of layers the sum of their squared correlations (the Frobenius norms CKA is made of)."""
    found: list[pd.DataFrame] = []
    sums: dict[tuple, float] = {}
    for a in tqdm(blocks, desc="finding similar units", unit="layer", disable=not progress or not blocks):
        buckets: dict[tuple[str, str], list] = {}
        for b in blocks:
            scores = correlations(a, b)
            if scores is None:
                continue
            squares = float(np.nansum(scores.astype(np.float64) ** 2))
            if a is b:  # a unit is not its own neighbour; its correlation 1 with itself still counts for CKA
                np.fill_diagonal(scores, np.nan)
            key = ((a.model_id, a.layer), (b.model_id, b.layer))
            sums[key] = sums.get(key, 0.0) + squares
            buckets.setdefault(_scope(a, b), []).append((b, scores))
        for (scope, other_model), members in buckets.items():
            scores = np.hstack([m[1] for m in members])
            layers = np.concatenate([[m[0].layer] * len(m[0].units) for m in members])
            units = np.concatenate([m[0].units for m in members])
            rows, cols = _strongest(scores, top)
            found.append(pd.DataFrame({
                "model_id": a.model_id, "layer": a.layer, "unit": a.units[rows].astype(np.int32), "scope": scope,
                "other_model": other_model, "other_layer": layers[cols], "other_unit": units[cols].astype(np.int32),
                "score": scores[rows, cols].astype(np.float64)}))
    return (pd.concat(found, ignore_index=True) if found else pd.DataFrame(), sums)


def cka_table(sums: dict[tuple, float]) -> pd.DataFrame:
    """Linear CKA of every pair of layers that share images, in both directions."""
    def total(x, y):
        return sums.get((x, y))

    layers = sorted({x for pair in sums for x in pair})
    rows = []
    for x in layers:
        for y in layers:
            cross, xx, yy = total(x, y), total(x, x), total(y, y)
            if cross is None or not xx or not yy:
                continue
            rows.append((*x, *y, float(min(1.0, cross / np.sqrt(xx * yy)))))
    return pd.DataFrame(rows, columns=["model_id", "layer", "other_model", "other_layer", "cka"])


def match(a: list[Block], b: list[Block]) -> dict:
    """The one-to-one matching of layer a's units to layer b's (blocks of one layer each) that maximises the
    summed correlation (an optimal assignment), pairs best first; dead units stay unmatched."""
    ua = np.concatenate([x.units for x in a]) if a else np.array([], dtype=np.int64)
    ub = np.concatenate([y.units for y in b]) if b else np.array([], dtype=np.int64)
    scores = np.full((len(ua), len(ub)), np.nan)
    ra = np.cumsum([0] + [len(x.units) for x in a])
    rb = np.cumsum([0] + [len(y.units) for y in b])
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            block = correlations(x, y)
            if block is not None:
                scores[ra[i]:ra[i + 1], rb[j]:rb[j + 1]] = block
    live_a = np.flatnonzero(np.isfinite(scores).any(axis=1))
    live_b = np.flatnonzero(np.isfinite(scores).any(axis=0))
    pairs = []
    if len(live_a) and len(live_b):
        sub = scores[np.ix_(live_a, live_b)]
        rows, cols = linear_sum_assignment(np.where(np.isfinite(sub), sub, -1.0), maximize=True)
        pairs = [{"a": int(ua[live_a[r]]), "b": int(ub[live_b[c]]), "score": float(sub[r, c])}
                 for r, c in zip(rows, cols) if np.isfinite(sub[r, c])]
    pairs.sort(key=lambda p: (-p["score"], p["a"]))
    good = sum(p["score"] >= GOOD_MATCH for p in pairs)
    return {"pairs": pairs, "good_match": GOOD_MATCH, "good": good,
            "share_good": good / max(1, min(len(ua), len(ub))), "units_a": len(ua), "units_b": len(ub)}


# ---- the derived tables, built by ingest ----------------------------------------------------------------

SAMPLES = "SELECT run_id, dataset, images FROM response_images"
RESPONSES = """
    SELECT r.model_id, r.layer, r.run_id, r.unit, r.responses
    FROM unit_responses r JOIN layers l ON l.model_id = r.model_id AND l.layer = r.layer
    ORDER BY r.model_id, l.position, r.run_id, r.unit
"""

# Ranks within each unit's scope and other model, ties broken by name.
KEEP = """
    INSERT INTO similar_units BY NAME
    SELECT model_id, layer, unit, scope, rank - 1 AS rank, other_model, other_layer, other_unit, score
    FROM (SELECT *, row_number() OVER (PARTITION BY model_id, layer, unit, scope, other_model
                                       ORDER BY score DESC, other_layer, other_unit) AS rank
          FROM candidates)
"""


def derive(con, top: int = TOP, progress: bool = False) -> None:
    """Fills `similar_units` and `layer_similarity` from every unit's sampled responses in the store."""
    blocks = blocks_from(con.execute(SAMPLES).df(), con.execute(RESPONSES).df())
    candidates, sums = neighbours_and_cka(blocks, top, progress)
    if len(candidates):
        con.register("candidates", candidates)
        con.execute(KEEP)
        con.unregister("candidates")
    cka = cka_table(sums)
    if len(cka):
        con.register("cka", cka)
        con.execute("INSERT INTO layer_similarity BY NAME SELECT * FROM cka")
        con.unregister("cka")
