"""Read-only queries: the only way pages and CLI read a store. All values are bound as parameters.

`Store` opens a store file (refusing one of another schema version) and answers what every page needs:
models, layers, runs (provenance), the layer search and the summary. Each technique's read side is one mixin
module beside this one (stats, dataset, tuning, featurevis, circuits, similar, classes,
dictionary); `Store` inherits them
all, and each declares its `SECTION`: its key in `unit --json`, the method that fills it, and its per-unit
table. A new technique adds its module and one line in READERS.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from store import SCHEMA_VERSION, StoreError
from store.errors import StoreVersionError, first_line
from store.queries.base import Section
from store.queries.circuits import CircuitsQueries
from store.queries.classes import ClassesQueries
from store.queries.dataset import DatasetQueries
from store.queries.dictionary import DictionaryQueries
from store.queries.featurevis import FeaturevisQueries
from store.queries.similar import SimilarQueries
from store.queries.stats import STAT_COLUMNS, StatsQueries
from store.queries.tuning import TuningQueries

__all__ = ["SECTIONS", "STAT_COLUMNS", "Store", "READERS"]

# In the order of their keys in `unit --json`.
READERS = (StatsQueries, DatasetQueries, TuningQueries, FeaturevisQueries, CircuitsQueries, SimilarQueries,
           ClassesQueries, DictionaryQueries)


class Store(*READERS):
    """A read-only connection to one store file. Cheap to open; safe to share across threads per cursor."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no store at {self.path}; build one with `microscope demo` or `microscope precompute`")
        try:
            self.con = duckdb.connect(str(self.path), read_only=True)
            version = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except duckdb.Error as exc:
            raise StoreError(f"cannot open store {self.path}: corrupt, locked or not a Microscope store "
                             f"({first_line(exc)})") from None
        if not version or version[0] != SCHEMA_VERSION:
            self.con.close()
            found = f"schema {version[0]}" if version else "no schema version"
            # A store is a build artefact: every table of this version is there, or the store is refused whole.
            raise StoreVersionError(f"store {self.path} has {found}; this version of Microscope reads "
                                    f"{SCHEMA_VERSION}: rebuild it with `microscope ingest`")

    def close(self) -> None:
        self.con.close()

    # ---- models and layers ---------------------------------------------------------------------------

    def built_at(self) -> str:
        return self._rows("SELECT value FROM meta WHERE key = 'built_at'")[0]["value"]

    def built_from(self) -> str | None:
        """The work folder whose shards the store was built from; None for a store built before it was recorded."""
        rows = self._rows("SELECT value FROM meta WHERE key = 'work'")
        return rows[0]["value"] if rows else None

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
            FROM layers l WHERE l.model_id = $model ORDER BY l.position
        """, {"model": model_id})

    def layer(self, model_id: str, layer: str) -> dict | None:
        """A layer by canonical name or alias."""
        rows = self._rows("SELECT * FROM layers WHERE model_id = $model AND (layer = $layer OR alias = $layer) "
                          "ORDER BY position", {"model": model_id, "layer": layer})
        return rows[0] if rows else None

    def thumbnails(self, model_id: str, layer: str, units: list[int], technique: str = "dataset") -> dict[int, bytes]:
        """The gallery picture of each unit that a technique gave one (dataset: the top example's crop)."""
        rows = self._rows("""
            SELECT unit, data FROM thumbnails
            WHERE model_id = $model AND layer = $layer AND technique = $technique AND list_contains($units, unit)
        """, {"model": model_id, "layer": layer, "technique": technique, "units": [int(u) for u in units]})
        return {r["unit"]: r["data"] for r in rows}

    # ---- one unit ----------------------------------------------------------------------------------------

    def unit_name(self, model_id: str, layer: str, unit: int) -> str:
        return f"{model_id}@{layer}:{unit}"

    def unit_runs(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """Provenance: the runs that produced what is stored for this unit."""
        rows = self._rows("""
            SELECT technique, run_id, params, seed, dataset, images_seen, images_skipped, device,
                   finished_at, seconds
            FROM runs WHERE model_id = $model AND layer = $layer AND $unit >= unit_start AND $unit < unit_stop
            ORDER BY technique
        """, {"model": model_id, "layer": layer, "unit": unit})
        for row in rows:
            row["params"] = json.loads(row["params"])
        return rows

    def unit_record(self, model_id: str, layer: str, unit: int) -> dict:
        """Everything stored for one unit, JSON-ready (images left out; see `unit_examples`): one key per
        section of SECTIONS, in its order."""
        return {section.key: section.record(self, model_id, layer, unit) for section in SECTIONS}

    # ---- search and summary ------------------------------------------------------------------------------

    def find_layer(self, text: str, model_id: str | None = None) -> list[dict]:
        """Layers whose name or alias equals `text`, in one model or in all."""
        return self._rows("""
            SELECT model_id, layer, alias, units FROM layers
            WHERE (layer = $text OR alias = $text) AND ($model IS NULL OR model_id = $model)
            ORDER BY model_id, position
        """, {"text": text, "model": model_id})

    def units_computed(self, model_id: str) -> dict[str, int]:
        """{technique: units it has rows for} for one model, techniques by name, those with none left out."""
        counts = {}
        for section in SECTIONS:
            if section.table:
                n = self._rows(f"SELECT count(*) AS n FROM (SELECT DISTINCT layer, unit FROM {section.table} "
                               "WHERE model_id = $model)", {"model": model_id})[0]["n"]
                if n:
                    counts[section.key] = n
        return dict(sorted(counts.items()))

    def summary(self) -> dict:
        """What the store holds: for `microscope info --json`."""
        models = []
        for m in self.models():
            models.append({
                "model": m["model_id"], "arch": m["arch"], "source": m["source"], "revision": m["revision"],
                "layers": [{"layer": layer["layer"], "alias": layer["alias"], "units": layer["units"],
                            "computed": {"stats": layer["stats_units"], "dataset": layer["dataset_units"]}}
                           for layer in self.layers(m["model_id"])],
                "units": int(m["unit_count"]),
                "units_per_technique": self.units_computed(m["model_id"]),
                "dictionaries": [{k: v for k, v in d.items() if k not in ("run_id", "position")}
                                 for d in self.dictionaries(m["model_id"])],
            })
        images = self._rows("SELECT count(*) AS n FROM images")[0]["n"]
        return {"store": str(self.path), "schema_version": SCHEMA_VERSION, "built_at": self.built_at(),
                "work": self.built_from(), "models": models, "images": images}


# What `unit --json` holds, in order: the unit's name, each technique's part, then the runs behind them.
SECTIONS: tuple[Section, ...] = (
    Section("unit", Store.unit_name),
    *(technique.SECTION for technique in READERS),
    # A dictionary feature's dictionary, stability and the channels it reads; a neuron's features that read it.
    Section("dictionary", Store.feature_record),
    Section("provenance", Store.unit_runs),
)
