"""The read side of `stats`: a unit's activation statistics, and a layer's units with theirs (the gallery)."""

from __future__ import annotations

import pandas as pd

from store.queries.base import Reader, Section

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


class StatsQueries(Reader):
    def layer_units(self, model_id: str, layer: str) -> pd.DataFrame:
        """One row per unit of the layer with its statistics (NaN where not computed)."""
        return self._frame("""
            SELECT u.unit, s.max, s.mean, s.std, s.p50, s.p99, s.frac_positive, coalesce(s.dead, false) AS dead
            FROM (SELECT range AS unit
                  FROM range((SELECT units FROM layers WHERE model_id = $model AND layer = $layer))) u
            LEFT JOIN unit_stats s ON s.model_id = $model AND s.layer = $layer AND s.unit = u.unit
            ORDER BY u.unit
        """, {"model": model_id, "layer": layer})

    def unit_stats(self, model_id: str, layer: str, unit: int) -> dict | None:
        rows = self._rows("SELECT * EXCLUDE (model_id, layer, unit) FROM unit_stats "
                          "WHERE model_id = $model AND layer = $layer AND unit = $unit",
                          {"model": model_id, "layer": layer, "unit": unit})
        return rows[0] if rows else None

    SECTION = Section("stats", unit_stats, table="unit_stats")
