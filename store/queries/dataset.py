"""The read side of `dataset`: a unit's top, bottom and quantile examples, with their images."""

from __future__ import annotations

from store.queries.base import Reader, Section


class DatasetQueries(Reader):
    def unit_examples(self, model_id: str, layer: str, unit: int, with_images: bool = True) -> list[dict]:
        """Top, bottom and quantile examples in that order, each with its image bytes when asked."""
        image = ", i.data AS image, i.source AS image_source" if with_images else ", i.source AS image_source"
        return self._rows(f"""
            SELECT e.kind, e.rank, e.quantile, e.image_id, e.activation, e.pos_y, e.pos_x, e.box,
                   e.source_image, e.source_box, e.heat_cells, e.heat, e.run_id {image}
            FROM dataset_examples e LEFT JOIN images i USING (image_id)
            WHERE e.model_id = $model AND e.layer = $layer AND e.unit = $unit
            ORDER BY CASE e.kind WHEN 'top' THEN 0 WHEN 'bottom' THEN 1 ELSE 2 END, e.rank
        """, {"model": model_id, "layer": layer, "unit": unit})

    def dataset_record(self, model_id: str, layer: str, unit: int) -> dict | None:
        """The JSON view: the examples by kind, each with its image's source, activation, argmax cell, crop box
        (input pixels), and the source image it was cut from with the crop's box in that image's pixels (images
        and heatmaps left out; see `unit_examples`)."""
        examples = self.unit_examples(model_id, layer, unit, with_images=False)
        if not examples:
            return None
        record: dict[str, list] = {"top": [], "bottom": [], "quantile": []}
        for ex in examples:
            record[ex["kind"]].append({
                "rank": ex["rank"], "quantile": ex["quantile"], "image_id": ex["image_id"],
                "image_source": ex["image_source"], "activation": ex["activation"],
                "argmax": {"y": ex["pos_y"], "x": ex["pos_x"]}, "crop_box": list(ex["box"]),
                "source_image": ex["source_image"],
                "source_box": list(ex["source_box"]) if ex["source_box"] is not None else None,
            })
        return record

    SECTION = Section("dataset", dataset_record, table="dataset_examples")
