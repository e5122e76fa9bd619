"""The read side of `circuits`: a unit's weight neighbours, a layer's paths from the layers before it, and the
whole weight matrix between a layer and one source."""

from __future__ import annotations

import pandas as pd

from store.queries.base import Reader, Section


class CircuitsQueries(Reader):
    def unit_circuits(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """A unit's stored neighbours: inputs per source layer, then outputs; strongest positive first within
        each, then strongest negative; `kernel` is float32 bytes (kernel_h x kernel_w)."""
        return self._rows("""
            SELECT direction, other_layer, hops, other_unit, rank, weight, norm, kernel_h, kernel_w, kernel, run_id
            FROM circuits WHERE model_id = $model AND layer = $layer AND unit = $unit
            ORDER BY direction, hops, other_layer, weight < 0, rank
        """, {"model": model_id, "layer": layer, "unit": unit})

    def circuit_paths(self, model_id: str, layer: str) -> list[dict]:
        """The layers this layer has weights from (nearest first), each with status ok, not_linear or error and
        the reason, and the kernels' window and full extent."""
        return self._rows("""
            SELECT source, hops, status, message, kernel_h, kernel_w, support_h, support_w, run_id
            FROM circuit_paths WHERE model_id = $model AND layer = $layer ORDER BY hops
        """, {"model": model_id, "layer": layer})

    def circuit_matrix(self, model_id: str, layer: str, source: str) -> pd.DataFrame:
        """The weight matrix from `source` into `layer`: one row per unit of the layer (`unit`, `weights`: a
        list with one signed weight per source unit); empty where none is stored."""
        return self._frame("SELECT unit, weights FROM circuit_matrix "
                           "WHERE model_id = $model AND layer = $layer AND source = $source ORDER BY unit",
                           {"model": model_id, "layer": layer, "source": source})

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

    SECTION = Section("circuits", circuits_record, table="circuits")
