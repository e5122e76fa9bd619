"""The read side of `tuning`: a unit's responses to the stimulus families, a layer's tuning for the gallery,
and the search for units tuned to a range of one axis."""

from __future__ import annotations

import json

import pandas as pd

from store.queries.base import Reader, Section


class TuningQueries(Reader):
    def unit_tuning(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """One row per stimulus family: the response grids, axes and summary; `relative` is the best response
        over the unit's top dataset activation (unit_stats.max), NULL where that is not stored or not > 0."""
        rows = self._rows("""
            SELECT t.family, t.axes, t.shape, t.response, t.response_centre, t.best, t.best_centre, t.blank,
                   t.preferred, t.width, t.selectivity, s.max AS dataset_max,
                   CASE WHEN s.max > 0 THEN t.best / s.max END AS relative, t.run_id
            FROM tuning t LEFT JOIN unit_stats s USING (model_id, layer, unit)
            WHERE t.model_id = $model AND t.layer = $layer AND t.unit = $unit ORDER BY t.family
        """, {"model": model_id, "layer": layer, "unit": unit})
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
        rows = self._rows("SELECT family, any_value(axes) AS axes FROM tuning WHERE model_id = $model "
                          "GROUP BY family ORDER BY family", {"model": model_id})
        return {r["family"]: json.loads(r["axes"]) for r in rows}

    def layer_tuning(self, model_id: str, layer: str) -> pd.DataFrame:
        """One row per unit with tuning: `<family>_<axis>_sel` and `<family>_<axis>_pref` for every circular
        axis (orientation, hue, phase), for sorting and filtering the gallery. Empty without tuning."""
        rows = self._rows("SELECT unit, family, axes, preferred, selectivity FROM tuning "
                          "WHERE model_id = $model AND layer = $layer ORDER BY unit, family",
                          {"model": model_id, "layer": layer})
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
        return self._rows("""
            WITH t AS (
                SELECT t.*, list_position(json_extract_string(t.axes, '$[*].name'), $axis) AS i
                FROM tuning t WHERE t.model_id = $model AND t.family = $family AND ($layer IS NULL OR t.layer = $layer))
            SELECT t.layer, l.alias, t.unit, t.preferred[i] AS preferred, t.width[i] AS width,
                   t.selectivity[i] AS selectivity, t.best, CASE WHEN s.max > 0 THEN t.best / s.max END AS relative
            FROM t JOIN layers l USING (model_id, layer) LEFT JOIN unit_stats s USING (model_id, layer, unit)
            WHERE t.i > 0 AND coalesce(t.selectivity[i], 0) >= $min_selectivity
              AND ($min_relative IS NULL OR (s.max > 0 AND t.best / s.max >= $min_relative))
              AND ($lo IS NULL OR $hi IS NULL
                   OR ($lo <= $hi AND t.preferred[i] BETWEEN $lo AND $hi)
                   OR ($lo > $hi AND (t.preferred[i] >= $lo OR t.preferred[i] <= $hi)))
            ORDER BY t.selectivity[i] DESC NULLS LAST, l.position, t.unit
            LIMIT $limit
        """, {"axis": axis, "model": model_id, "family": family, "layer": layer,
              "min_selectivity": float(min_selectivity), "min_relative": min_relative, "lo": lo, "hi": hi,
              "limit": int(limit)})

    SECTION = Section("tuning", tuning_record, table="tuning")
