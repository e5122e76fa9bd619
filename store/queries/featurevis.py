"""The read side of `featurevis`: the images rendered for a unit, how far to trust them, and a layer's DeepDream
and caricatures."""

from __future__ import annotations

import json

from store import trust
from store.queries.base import Reader, Section


class FeaturevisQueries(Reader):
    def unit_featurevis(self, model_id: str, layer: str, unit: int, with_images: bool = True) -> list[dict]:
        """Rendered images of one unit: technique, facet, achieved activation, the unit's spatial max on it with
        its place in the unit's dataset range (`ratio_to_top`, `sigma`: store.trust), the render's params (and
        image). The first channel picture (facet 0) also carries `trust`: the unit's trust record."""
        image = ", f.image" if with_images else ""
        rows = self._rows(f"""
            SELECT f.technique, f.facet, f.achieved AS achieved_activation, f.spatial_max, r.params, f.run_id {image}
            FROM featurevis f JOIN runs r USING (run_id)
            WHERE f.model_id = $model AND f.layer = $layer AND f.unit = $unit
            ORDER BY CASE f.technique WHEN 'channel' THEN 0 WHEN 'neuron' THEN 1 WHEN 'negative' THEN 2 ELSE 3 END,
                     f.facet
        """, {"model": model_id, "layer": layer, "unit": unit})
        if not rows:
            return rows
        stats = self._stats_of(model_id, layer, unit)
        for row in rows:
            row["params"] = json.loads(row["params"])
            place = trust.natural_range(row["spatial_max"], stats)
            row["ratio_to_top"], row["sigma"] = place["ratio_to_top"], place["sigma"]
            if (row["technique"], row["facet"]) == ("channel", 0):
                row["trust"] = self.featurevis_trust(model_id, layer, unit, picture_max=row["spatial_max"],
                                                     stats=stats)
        return rows

    def featurevis_trust(self, model_id: str, layer: str, unit: int, *, picture_max: float | None = None,
                         stats: dict | None = None) -> dict:
        """The trust record of the unit's channel picture (store.trust.signals); keys are None where a source
        (stats, dataset or the trust table) is not stored."""
        params = {"model": model_id, "layer": layer, "unit": unit}
        got = self._rows("""
            SELECT t.seed_agreement, t.seed_baseline, t.path, p.path AS top_path, p.natural_floor
            FROM (SELECT 1) LEFT JOIN featurevis_trust t
                ON t.model_id = $model AND t.layer = $layer AND t.unit = $unit
            LEFT JOIN top_paths p ON p.model_id = $model AND p.layer = $layer AND p.unit = $unit
        """, params)[0]
        if picture_max is None:
            found = self._rows("""SELECT spatial_max FROM featurevis WHERE model_id = $model AND layer = $layer
                                  AND unit = $unit AND technique = 'channel' AND facet = 0""", params)
            picture_max = found[0]["spatial_max"] if found else None
        if stats is None:
            stats = self._stats_of(model_id, layer, unit)
        return trust.signals(picture_max, stats, got["seed_agreement"], got["path"], got["top_path"],
                             got["natural_floor"], seed_baseline=got["seed_baseline"])

    def _stats_of(self, model_id: str, layer: str, unit: int) -> dict | None:
        rows = self._rows("SELECT mean, std, max FROM unit_stats WHERE model_id = $model AND layer = $layer "
                          "AND unit = $unit", {"model": model_id, "layer": layer, "unit": unit})
        return rows[0] if rows else None

    def featurevis_record(self, model_id: str, layer: str, unit: int) -> list[dict] | None:
        """The JSON view: `unit_featurevis` without the images."""
        return self.unit_featurevis(model_id, layer, unit, with_images=False) or None

    def layer_visuals(self, model_id: str, layer: str) -> list[dict]:
        """DeepDream and caricatures of a layer, with the photos the caricatures start from."""
        return self._rows("""
            SELECT technique, facet, source, image, source_image, achieved, run_id FROM layer_visuals
            WHERE model_id = $model AND layer = $layer ORDER BY facet
        """, {"model": model_id, "layer": layer})

    SECTION = Section("featurevis", featurevis_record, table="featurevis")
