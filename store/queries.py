"""Read-only queries: the only way pages and CLI read a store. All values are bound as parameters."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd

from store import SCHEMA_VERSION, StoreError

# Layer-gallery columns a user may sort and filter by, with labels for people.
STAT_COLUMNS = {
    "unit": "unit",
    "max": "max activation",
    "mean": "mean",
    "std": "std",
    "p50": "median",
    "p99": "99th percentile",
    "frac_positive": "fraction of images > 0",
}


class Store:
    """A read-only connection to one store file. Cheap to open; safe to share across threads per cursor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no store at {self.path}; build one with `microscope demo` or `microscope precompute`")
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
            version = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except duckdb.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot open store {self.path}: corrupt, locked or not a Microscope store ({detail})") from None
        if not version or version[0] != SCHEMA_VERSION:
            found = version[0] if version else "none"
            raise StoreError(f"store {self.path} has schema version {found}; this Microscope reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.con.close()

    def _rows(self, sql: str, params: list | None = None) -> list[dict]:
        cur = self.con.cursor()
        try:
            result = cur.execute(sql, params or [])
            names = [d[0] for d in result.description]
            return [dict(zip(names, row)) for row in result.fetchall()]
        finally:
            cur.close()

    def _frame(self, sql: str, params: list | None = None) -> pd.DataFrame:
        cur = self.con.cursor()
        try:
            return cur.execute(sql, params or []).df()
        finally:
            cur.close()

    # ---- models and layers ---------------------------------------------------------------------------

    def built_at(self) -> str:
        return self._rows("SELECT value FROM meta WHERE key = 'built_at'")[0]["value"]

    def models(self) -> list[dict]:
        return self._rows("""
            SELECT m.*, count(l.layer) AS layer_count, coalesce(sum(l.units), 0) AS unit_count,
                   (SELECT list(DISTINCT technique ORDER BY technique) FROM runs r WHERE r.model_id = m.model_id)
                       AS techniques
            FROM models m LEFT JOIN layers l USING (model_id)
            GROUP BY ALL ORDER BY m.model_id
        """)

    def model(self, model_id: str) -> dict | None:
        rows = [m for m in self.models() if m["model_id"] == model_id]
        return rows[0] if rows else None

    def layers(self, model_id: str) -> list[dict]:
        """Layers in network order, each with the units computed per technique."""
        return self._rows("""
            SELECT l.*,
                   (SELECT count(*) FROM unit_stats s WHERE s.model_id = l.model_id AND s.layer = l.layer)
                       AS stats_units,
                   (SELECT count(DISTINCT unit) FROM dataset_examples e
                     WHERE e.model_id = l.model_id AND e.layer = l.layer) AS dataset_units,
                   (SELECT count(*) FROM unit_stats s WHERE s.model_id = l.model_id AND s.layer = l.layer AND s.dead)
                       AS dead_units
            FROM layers l WHERE l.model_id = ? ORDER BY l.position
        """, [model_id])

    def layer(self, model_id: str, layer: str) -> dict | None:
        """A layer by canonical name or alias."""
        rows = self._rows("SELECT * FROM layers WHERE model_id = ? AND (layer = ? OR alias = ?) ORDER BY position",
                          [model_id, layer, layer])
        return rows[0] if rows else None

    # ---- layer gallery -----------------------------------------------------------------------------------

    def layer_units(self, model_id: str, layer: str) -> pd.DataFrame:
        """One row per unit of the layer with its statistics (NaN where not computed)."""
        return self._frame("""
            SELECT u.unit, s.max, s.mean, s.std, s.p50, s.p99, s.frac_positive, coalesce(s.dead, false) AS dead
            FROM (SELECT range AS unit FROM range((SELECT units FROM layers WHERE model_id = ? AND layer = ?))) u
            LEFT JOIN unit_stats s ON s.model_id = ? AND s.layer = ? AND s.unit = u.unit
            ORDER BY u.unit
        """, [model_id, layer, model_id, layer])

    def thumbnails(self, model_id: str, layer: str, units: list[int], technique: str = "dataset") -> dict[int, bytes]:
        rows = self._rows("""
            SELECT unit, data FROM thumbnails
            WHERE model_id = ? AND layer = ? AND technique = ? AND list_contains(?, unit)
        """, [model_id, layer, technique, [int(u) for u in units]])
        return {r["unit"]: r["data"] for r in rows}

    # ---- one unit ----------------------------------------------------------------------------------------

    def unit_stats(self, model_id: str, layer: str, unit: int) -> dict | None:
        rows = self._rows("SELECT * EXCLUDE (model_id, layer, unit) FROM unit_stats "
                          "WHERE model_id = ? AND layer = ? AND unit = ?", [model_id, layer, unit])
        return rows[0] if rows else None

    def unit_examples(self, model_id: str, layer: str, unit: int, with_images: bool = True) -> list[dict]:
        """Top, bottom and quantile examples in that order, each with its image bytes when asked."""
        image = ", i.data AS image, i.source AS image_source" if with_images else ", i.source AS image_source"
        return self._rows(f"""
            SELECT e.kind, e.rank, e.quantile, e.image_id, e.activation, e.pos_y, e.pos_x, e.box,
                   e.heat_cells, e.heat, e.run_id {image}
            FROM dataset_examples e LEFT JOIN images i USING (image_id)
            WHERE e.model_id = ? AND e.layer = ? AND e.unit = ?
            ORDER BY CASE e.kind WHEN 'top' THEN 0 WHEN 'bottom' THEN 1 ELSE 2 END, e.rank
        """, [model_id, layer, unit])

    def unit_runs(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """Provenance: the runs that produced what is stored for this unit."""
        rows = self._rows("""
            SELECT technique, run_id, params, seed, dataset, images_seen, images_skipped, device,
                   finished_at, seconds
            FROM runs WHERE model_id = ? AND layer = ? AND ? >= unit_start AND ? < unit_stop
            ORDER BY technique
        """, [model_id, layer, unit, unit])
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows

    def unit_record(self, model_id: str, layer: str, unit: int) -> dict:
        """Everything stored for one unit, JSON-ready (images left out; see `unit_examples`)."""
        stats = self.unit_stats(model_id, layer, unit)
        examples = self.unit_examples(model_id, layer, unit, with_images=False)
        dataset: dict[str, list] = {"top": [], "bottom": [], "quantile": []}
        for ex in examples:
            dataset[ex["kind"]].append({
                "rank": ex["rank"], "quantile": ex["quantile"], "image_id": ex["image_id"],
                "image_source": ex["image_source"], "activation": ex["activation"],
                "argmax": {"y": ex["pos_y"], "x": ex["pos_x"]}, "crop_box": list(ex["box"]),
            })
        return {
            "unit": f"{model_id}@{layer}:{unit}",
            "stats": stats,
            "dataset": dataset if examples else None,
            "tuning": self.tuning_record(model_id, layer, unit),
            "featurevis": [{k: v for k, v in row.items() if k != "image"}
                           for row in self.unit_featurevis(model_id, layer, unit, with_images=False)] or None,
            "circuits": self.circuits_record(model_id, layer, unit),
            "provenance": self.unit_runs(model_id, layer, unit),
        }

    # ---- feature visualisation -----------------------------------------------------------------------------

    def unit_featurevis(self, model_id: str, layer: str, unit: int, with_images: bool = True) -> list[dict]:
        """Rendered images of one unit: technique, facet, achieved activation, the render's params (and image)."""
        if not self.has_table("featurevis"):
            return []
        image = ", f.image" if with_images else ""
        rows = self._rows(f"""
            SELECT f.technique, f.facet, f.achieved AS achieved_activation, r.params, f.run_id {image}
            FROM featurevis f JOIN runs r USING (run_id)
            WHERE f.model_id = ? AND f.layer = ? AND f.unit = ?
            ORDER BY CASE f.technique WHEN 'channel' THEN 0 WHEN 'neuron' THEN 1 WHEN 'negative' THEN 2 ELSE 3 END,
                     f.facet
        """, [model_id, layer, unit])
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows

    def layer_visuals(self, model_id: str, layer: str) -> list[dict]:
        """DeepDream and caricatures of a layer, with the photos the caricatures start from."""
        if not self.has_table("layer_visuals"):
            return []
        return self._rows("""
            SELECT technique, facet, source, image, source_image, achieved, run_id FROM layer_visuals
            WHERE model_id = ? AND layer = ? ORDER BY facet
        """, [model_id, layer])

    # ---- tuning curves -----------------------------------------------------------------------------------

    def has_table(self, table: str) -> bool:
        """Whether the store has this table (stores built before a technique existed lack its table)."""
        return bool(self._rows("SELECT 1 FROM information_schema.tables WHERE table_name = ?", [table]))

    def unit_tuning(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """One row per stimulus family: the response grids, axes and summary; `relative` is the best response
        over the unit's top dataset activation (unit_stats.max), NULL where that is not stored or not > 0."""
        if not self.has_table("tuning"):
            return []
        rows = self._rows("""
            SELECT t.family, t.axes, t.shape, t.response, t.response_centre, t.best, t.best_centre, t.blank, t.preferred,
                   t.width, t.selectivity, s.max AS dataset_max,
                   CASE WHEN s.max > 0 THEN t.best / s.max END AS relative, t.run_id
            FROM tuning t LEFT JOIN unit_stats s USING (model_id, layer, unit)
            WHERE t.model_id = ? AND t.layer = ? AND t.unit = ? ORDER BY t.family
        """, [model_id, layer, unit])
        for row in rows:
            row["axes"] = json.loads(row["axes"])
        return rows

    def tuning_record(self, model_id: str, layer: str, unit: int) -> dict | None:
        """The JSON view of a unit's tuning, keyed by family: per axis the preferred value (degrees for
        angles), half-max width and selectivity; the best response, raw and relative to the dataset max."""
        rows = self.unit_tuning(model_id, layer, unit)
        if not rows:
            return None
        return {r["family"]: {
            "axes": {a["name"]: {"unit": a["unit"], "values": a["values"], "period": a["period"]} for a in r["axes"]},
            "preferred": {a["name"]: v for a, v in zip(r["axes"], r["preferred"])},
            "width": {a["name"]: v for a, v in zip(r["axes"], r["width"])},
            "selectivity": {a["name"]: v for a, v in zip(r["axes"], r["selectivity"]) if v is not None},
            "best": r["best"], "best_centre": r["best_centre"], "best_relative_to_dataset_max": r["relative"],
            "blank": r["blank"],
            "shape": list(r["shape"]), "response": list(r["response"]), "response_centre": list(r["response_centre"]),
        } for r in rows}

    def tuning_axes(self, model_id: str) -> dict[str, list[dict]]:
        """{family: axes} of the tuning grids stored for a model."""
        if not self.has_table("tuning"):
            return {}
        rows = self._rows("SELECT family, any_value(axes) AS axes FROM tuning WHERE model_id = ? "
                          "GROUP BY family ORDER BY family", [model_id])
        return {r["family"]: json.loads(r["axes"]) for r in rows}

    def layer_tuning(self, model_id: str, layer: str) -> pd.DataFrame:
        """One row per unit with tuning: `<family>_<axis>_sel` and `<family>_<axis>_pref` for every circular
        axis (orientation, hue, phase), for sorting and filtering the gallery. Empty without tuning."""
        if not self.has_table("tuning"):
            return pd.DataFrame({"unit": []})
        rows = self._rows("SELECT unit, family, axes, preferred, selectivity FROM tuning "
                          "WHERE model_id = ? AND layer = ? ORDER BY unit, family", [model_id, layer])
        wide: dict[int, dict] = {}
        for r in rows:
            out = wide.setdefault(r["unit"], {"unit": r["unit"]})
            for axis, pref, sel in zip(json.loads(r["axes"]), r["preferred"], r["selectivity"]):
                if axis["period"]:
                    out[f"{r['family']}_{axis['name']}_sel"] = sel
                    out[f"{r['family']}_{axis['name']}_pref"] = pref
        return pd.DataFrame(list(wide.values())) if wide else pd.DataFrame({"unit": []})

    def find_tuned(self, model_id: str, family: str, axis: str, lo: float | None = None, hi: float | None = None,
                   min_selectivity: float = 0.0, layer: str | None = None, limit: int = 200,
                   min_relative: float | None = None) -> list[dict]:
        """Units whose preferred value on one axis of one family lies in [lo, hi] (lo > hi wraps round a
        circular axis: 170 to 10) with at least this selectivity and (if given) a best response of at least
        this fraction of the unit's top dataset activation, most selective first."""
        if not self.has_table("tuning"):
            return []
        return self._rows("""
            WITH t AS (
                SELECT t.*, list_position(json_extract_string(t.axes, '$[*].name'), ?) AS i
                FROM tuning t WHERE t.model_id = ? AND t.family = ? AND (? IS NULL OR t.layer = ?))
            SELECT t.layer, l.alias, t.unit, t.preferred[i] AS preferred, t.width[i] AS width,
                   t.selectivity[i] AS selectivity, t.best, CASE WHEN s.max > 0 THEN t.best / s.max END AS relative
            FROM t JOIN layers l USING (model_id, layer) LEFT JOIN unit_stats s USING (model_id, layer, unit)
            WHERE t.i > 0 AND coalesce(t.selectivity[i], 0) >= ?
              AND (? IS NULL OR (s.max > 0 AND t.best / s.max >= ?))
              AND (? IS NULL OR ? IS NULL
                   OR (? <= ? AND t.preferred[i] BETWEEN ? AND ?)
                   OR (? > ? AND (t.preferred[i] >= ? OR t.preferred[i] <= ?)))
            ORDER BY t.selectivity[i] DESC NULLS LAST, l.position, t.unit
            LIMIT ?
        """, [axis, model_id, family, layer, layer, float(min_selectivity), min_relative, min_relative,
              lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, int(limit)])

    # ---- circuits ------------------------------------------------------------------------------------------

    def unit_circuits(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """A unit's stored neighbours: inputs per source layer, then outputs; strongest positive first within
        each, then strongest negative; `kernel` is float32 bytes (kernel_h x kernel_w)."""
        if not self.has_table("circuits"):
            return []
        return self._rows("""
            SELECT direction, other_layer, hops, other_unit, rank, weight, norm, kernel_h, kernel_w, kernel, run_id
            FROM circuits WHERE model_id = ? AND layer = ? AND unit = ?
            ORDER BY direction, hops, other_layer, weight < 0, rank
        """, [model_id, layer, unit])

    def circuit_paths(self, model_id: str, layer: str) -> list[dict]:
        """The layers this layer has weights from (nearest first), each with status ok, not_linear or error and
        the reason, and the kernels' window and full extent."""
        if not self.has_table("circuit_paths"):
            return []
        return self._rows("""
            SELECT source, hops, status, message, kernel_h, kernel_w, support_h, support_w, run_id
            FROM circuit_paths WHERE model_id = ? AND layer = ? ORDER BY hops
        """, [model_id, layer])

    def circuit_matrix(self, model_id: str, layer: str, source: str) -> pd.DataFrame:
        """The weight matrix from `source` into `layer`: one row per unit of the layer (`unit`, `weights`: a
        list with one signed weight per source unit); empty where none is stored."""
        if not self.has_table("circuit_matrix"):
            return pd.DataFrame({"unit": [], "weights": []})
        return self._frame("SELECT unit, weights FROM circuit_matrix WHERE model_id = ? AND layer = ? AND source = ? "
                           "ORDER BY unit", [model_id, layer, source])

    def circuits_record(self, model_id: str, layer: str, unit: int) -> dict | None:
        """The JSON view: `inputs` (from the adjacent layer before) and `outputs` (into the next layer), lists
        of {layer, unit, weight, norm} strongest (absolute weight) first; `expanded`: inputs from layers further
        back, keyed by layer; `kernels` are left out."""
        rows = self.unit_circuits(model_id, layer, unit)
        if not rows:
            return None
        record: dict = {"inputs": [], "outputs": [], "expanded": {}}
        for r in sorted(rows, key=lambda r: (-abs(r["weight"]), r["other_layer"], r["other_unit"])):
            item = {"layer": r["other_layer"], "unit": r["other_unit"], "weight": r["weight"], "norm": r["norm"]}
            if r["direction"] == "output":
                record["outputs"].append(item)
            elif r["hops"] == 1:
                record["inputs"].append(item)
            else:
                record["expanded"].setdefault(r["other_layer"], []).append(item)
        return record

    # ---- search and summary ------------------------------------------------------------------------------

    def find_layer(self, text: str, model_id: str | None = None) -> list[dict]:
        """Layers whose name or alias equals `text`, in one model or in all."""
        return self._rows("""
            SELECT model_id, layer, alias, units FROM layers
            WHERE (layer = ? OR alias = ?) AND (? IS NULL OR model_id = ?)
            ORDER BY model_id, position
        """, [text, text, model_id, model_id])

    def summary(self) -> dict:
        """What the store holds: for `microscope info --json`."""
        models = []
        # Techniques added after the first stores: their tables may be missing from an older store.
        later = "".join(f"UNION ALL SELECT DISTINCT '{t}', layer, unit FROM {t} WHERE model_id = $1\n"
                        for t in ("tuning", "featurevis", "circuits") if self.has_table(t))
        for m in self.models():
            counts = self._rows("""
                SELECT technique, count(*) AS units FROM (
                    SELECT 'stats' AS technique, layer, unit FROM unit_stats WHERE model_id = $1
                    UNION ALL SELECT DISTINCT 'dataset', layer, unit FROM dataset_examples WHERE model_id = $1
                    {later})
                GROUP BY technique ORDER BY technique
            """.format(later=later), [m["model_id"]])
            models.append({
                "model": m["model_id"], "arch": m["arch"], "source": m["source"], "revision": m["revision"],
                "layers": [{"layer": l["layer"], "alias": l["alias"], "units": l["units"],
                            "computed": {"stats": l["stats_units"], "dataset": l["dataset_units"]}}
                           for l in self.layers(m["model_id"])],
                "units": int(m["unit_count"]),
                "units_per_technique": {c["technique"]: c["units"] for c in counts},
            })
        images = self._rows("SELECT count(*) AS n FROM images")[0]["n"]
        return {"store": str(self.path), "schema_version": SCHEMA_VERSION, "built_at": self.built_at(),
                "models": models, "images": images}
