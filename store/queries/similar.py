"""The read side of `similar`: a unit's most similar units across the store, the matching of two layers' units
(the compare view) and the layer-by-layer CKA of two models (store/similarity.py says how they are measured)."""

from __future__ import annotations

from store import similarity
from store.queries.base import Reader, Section

SCOPES = ("layer", "model", "store")  # its own layer, its model's other layers, the other models


class SimilarQueries(Reader):
    def unit_similar(self, model_id: str, layer: str, unit: int) -> list[dict] | None:
        """The unit's neighbours in every scope, strongest first: {model, layer, unit, score, scope}; None where
        the unit's responses were not sampled (an empty list: sampled, but nothing to compare it with)."""
        if not self._rows("SELECT 1 FROM unit_responses WHERE model_id = $model AND layer = $layer AND unit = $unit",
                          {"model": model_id, "layer": layer, "unit": unit}):
            return None
        return self._rows("""
            SELECT other_model AS model, other_layer AS layer, other_unit AS unit, score, scope
            FROM similar_units WHERE model_id = $model AND layer = $layer AND unit = $unit
            ORDER BY score DESC, other_model, other_layer, other_unit
        """, {"model": model_id, "layer": layer, "unit": unit})

    def _blocks(self, model_id: str, layer: str) -> list[similarity.Block]:
        where = {"model": model_id, "layer": layer}
        return similarity.blocks_from(
            self._frame("SELECT run_id, dataset, images FROM response_images WHERE model_id = $model "
                        "AND layer = $layer", where),
            self._frame("SELECT model_id, layer, run_id, unit, responses FROM unit_responses "
                        "WHERE model_id = $model AND layer = $layer ORDER BY run_id, unit", where))

    def compare_layers(self, model_a: str, layer_a: str, model_b: str, layer_b: str) -> dict:
        """The one-to-one matching of layer a's units to layer b's (similarity.match), with how many units each
        layer has sampled responses for and the layers' CKA (None where they share no images)."""
        result = similarity.match(self._blocks(model_a, layer_a), self._blocks(model_b, layer_b))
        cka = self._rows("SELECT cka FROM layer_similarity WHERE model_id = $a AND layer = $la "
                         "AND other_model = $b AND other_layer = $lb",
                         {"a": model_a, "la": layer_a, "b": model_b, "lb": layer_b})
        return {"a": {"model": model_a, "layer": layer_a}, "b": {"model": model_b, "layer": layer_b},
                "measure": "Pearson correlation of spatial-max responses to the same dataset images",
                "cka": cka[0]["cka"] if cka else None, **result}

    def layer_cka(self, model_a: str, model_b: str) -> list[dict]:
        """Linear CKA between every layer of model a and every layer of model b, in network order."""
        return self._rows("""
            SELECT s.layer, s.other_layer, s.cka, la.position AS position, lb.position AS other_position
            FROM layer_similarity s
            JOIN layers la ON la.model_id = s.model_id AND la.layer = s.layer
            JOIN layers lb ON lb.model_id = s.other_model AND lb.layer = s.other_layer
            WHERE s.model_id = $a AND s.other_model = $b ORDER BY la.position, lb.position
        """, {"a": model_a, "b": model_b})

    def closest_layer(self, model_id: str, layer: str) -> tuple[str, str] | None:
        """The layer of another model (else of this one) whose CKA with this layer is highest."""
        rows = self._rows("""
            SELECT other_model, other_layer FROM layer_similarity
            WHERE model_id = $model AND layer = $layer AND NOT (other_model = $model AND other_layer = $layer)
            ORDER BY other_model = $model, cka DESC, other_model, other_layer LIMIT 1
        """, {"model": model_id, "layer": layer})
        return (rows[0]["other_model"], rows[0]["other_layer"]) if rows else None

    def sampled_layers(self, model_id: str) -> list[str]:
        """The model's layers with sampled responses (those the compare view can match), in network order."""
        return [r["layer"] for r in self._rows("""
            SELECT DISTINCT r.layer, l.position FROM unit_responses r JOIN layers l USING (model_id, layer)
            WHERE r.model_id = $model ORDER BY l.position
        """, {"model": model_id})]

    SECTION = Section("similar", unit_similar, table="unit_responses")
