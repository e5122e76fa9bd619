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
            "provenance": self.unit_runs(model_id, layer, unit),
        }

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
        for m in self.models():
            counts = self._rows("""
                SELECT technique, count(*) AS units FROM (
                    SELECT 'stats' AS technique, layer, unit FROM unit_stats WHERE model_id = ?
                    UNION ALL SELECT DISTINCT 'dataset', layer, unit FROM dataset_examples WHERE model_id = ?)
                GROUP BY technique ORDER BY technique
            """, [m["model_id"], m["model_id"]])
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
