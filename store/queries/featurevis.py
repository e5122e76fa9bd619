"""The read side of `featurevis`: the images rendered for a unit, and a layer's DeepDream and caricatures."""

from __future__ import annotations

import json

from store.queries.base import Reader, Section


class FeaturevisQueries(Reader):
    def unit_featurevis(self, model_id: str, layer: str, unit: int, with_images: bool = True) -> list[dict]:
        """Rendered images of one unit: technique, facet, achieved activation, the render's params (and image)."""
        image = ", f.image" if with_images else ""
        rows = self._rows(f"""
            SELECT f.technique, f.facet, f.achieved AS achieved_activation, r.params, f.run_id {image}
            FROM featurevis f JOIN runs r USING (run_id)
            WHERE f.model_id = $model AND f.layer = $layer AND f.unit = $unit
            ORDER BY CASE f.technique WHEN 'channel' THEN 0 WHEN 'neuron' THEN 1 WHEN 'negative' THEN 2 ELSE 3 END,
                     f.facet
        """, {"model": model_id, "layer": layer, "unit": unit})
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows

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
