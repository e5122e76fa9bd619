"""The read side of `dictionary`: a layer's dictionaries and their quality, a feature's direction over its base
layer's channels and the channels it reads most, and, for a neuron, the features whose directions read it."""

from __future__ import annotations

from store.queries.base import Reader, Section

READS = 8  # channels listed per feature, and features per neuron
QUALITY = ("explained_variance", "second_explained_variance", "mean_l0", "dead_share", "dense_share",
           "stable_share", "stability_median", "stable_cosine")


class DictionaryQueries(Reader):
    def dictionaries(self, model_id: str, base_layer: str | None = None) -> list[dict]:
        """The model's dictionaries (of one base layer, or all), each with its quality table's values."""
        return self._rows("""
            SELECT d.* EXCLUDE (b_pre), l.position FROM dictionaries d
            JOIN layers l ON l.model_id = d.model_id AND l.layer = d.layer
            WHERE d.model_id = $model AND ($base IS NULL OR d.base_layer = $base) ORDER BY l.position
        """, {"model": model_id, "base": base_layer})

    def dictionary(self, model_id: str, layer: str) -> dict | None:
        """The dictionary whose feature layer is `layer`, or None where `layer` is not a dictionary layer."""
        rows = [d for d in self.dictionaries(model_id) if d["layer"] == layer]
        return rows[0] if rows else None

    def stability(self, model_id: str, layer: str) -> list[dict]:
        """Each live feature's best cosine in the second seed's dictionary (for the layer page's distribution)."""
        return self._rows("""
            SELECT unit, seed_cosine, stable, frequency, channel_cosine FROM dictionary_features
            WHERE model_id = $model AND layer = $layer AND frequency > 0 ORDER BY unit
        """, {"model": model_id, "layer": layer})

    def unmatched_features(self, model_id: str, layer: str, limit: int = 12) -> list[dict]:
        """Stable live features that no single channel matches: lowest best channel cosine first."""
        return self._rows("""
            SELECT unit, channel_cosine, best_channel, seed_cosine, frequency FROM dictionary_features
            WHERE model_id = $model AND layer = $layer AND frequency > 0 AND stable
            ORDER BY channel_cosine, unit LIMIT $limit
        """, {"model": model_id, "layer": layer, "limit": limit})

    def feature_direction(self, model_id: str, layer: str, unit: int) -> list[float] | None:
        rows = self._rows("SELECT direction FROM dictionary_features WHERE model_id = $model AND layer = $layer "
                          "AND unit = $unit", {"model": model_id, "layer": layer, "unit": unit})
        return [float(v) for v in rows[0]["direction"]] if rows else None

    def feature_record(self, model_id: str, layer: str, unit: int) -> dict | None:
        """For a dictionary feature: its dictionary (name, base layer, quality), how often it fires, its
        stability, and the base layer's channels its direction reads most (signed, strongest |weight| first;
        `nearest` the best single channel). For a neuron of a layer that has dictionaries: `read_by`, the
        features whose directions read it most. None otherwise."""
        rows = self._rows("""
            SELECT f.* EXCLUDE (encoder, encoder_bias), d.base_layer, d.name, d.features, d.k, d.seed,
                   d.second_seed, {QUALITY}
            FROM dictionary_features f JOIN dictionaries d USING (model_id, layer)
            WHERE f.model_id = $model AND f.layer = $layer AND f.unit = $unit
        """.replace("{QUALITY}", ", ".join(f"d.{c}" for c in QUALITY)),
            {"model": model_id, "layer": layer, "unit": unit})
        if rows:
            row = rows[0]
            direction = [float(v) for v in row["direction"]]
            order = sorted(range(len(direction)), key=lambda c: -abs(direction[c]))[:READS]
            return {
                "dictionary": {"layer": layer, "base_layer": row["base_layer"], "name": row["name"],
                               "features": row["features"], "k": row["k"], "seed": row["seed"],
                               "second_seed": row["second_seed"], **{c: row[c] for c in QUALITY}},
                "frequency": row["frequency"], "seed_cosine": row["seed_cosine"], "seed_match": row["seed_match"],
                "stable": bool(row["stable"]),
                "nearest": {"layer": row["base_layer"], "unit": row["best_channel"], "cosine": row["channel_cosine"]},
                "reads": [{"layer": row["base_layer"], "unit": c, "weight": direction[c]} for c in order],
            }
        read_by = self._rows("""
            SELECT layer, unit, direction[$unit + 1] AS weight FROM dictionary_features f
            JOIN dictionaries d USING (model_id, layer)
            WHERE f.model_id = $model AND d.base_layer = $layer AND f.frequency > 0
            ORDER BY abs(direction[$unit + 1]) DESC, layer, unit LIMIT $limit
        """, {"model": model_id, "layer": layer, "unit": unit, "limit": READS})
        return {"read_by": read_by} if read_by else None

    SECTION = Section("direction", feature_direction, "dictionary_features")
