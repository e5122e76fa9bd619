"""The read side of `classes`: a unit's class votes (up, down) and the classes predicted on its top images, a
layer's path to the logits, each unit's top vote for the layer gallery, and the search for units that vote for
a class ("espresso")."""

from __future__ import annotations

import re

from store.queries.base import Reader, Section

WORD = re.compile(r"[\w'-]+")


def class_words(text: str) -> list[str]:
    """The words of a class query, lower case: `Egyptian cat` -> ['egyptian', 'cat']."""
    return WORD.findall(text.lower())


class ClassesQueries(Reader):
    def unit_classes(self, model_id: str, layer: str, unit: int) -> list[dict]:
        """A unit's stored rows: kind up, down or predicted; rank 0 strongest (most frequent)."""
        return self._rows("""
            SELECT kind, rank, class_index, label, weight, z, count, run_id FROM unit_classes
            WHERE model_id = $model AND layer = $layer AND unit = $unit ORDER BY kind, rank
        """, {"model": model_id, "layer": layer, "unit": unit})

    def class_path(self, model_id: str, layer: str) -> dict | None:
        """How the layer's path to the logits went: status ok, not_linear, error or no_classifier, the reason,
        the classifier module ('' for the model itself), the number of classes, whether they have names, and the
        number of top images the predictions count over."""
        rows = self._rows("SELECT status, message, classifier, classes, labeled, top_images, run_id FROM class_paths "
                          "WHERE model_id = $model AND layer = $layer", {"model": model_id, "layer": layer})
        return rows[0] if rows else None

    def classes_record(self, model_id: str, layer: str, unit: int) -> dict | None:
        """The JSON view: `up` and `down` ({index, label, weight}, strongest first), `predicted` ({index, label,
        count}, most frequent first); `status` and `message` where the layer's path is not linear (or failed).
        A label is None where the model has no class names: the index names the class."""
        path = self.class_path(model_id, layer)
        rows = self.unit_classes(model_id, layer, unit)
        if path is None and not rows:
            return None
        record: dict = {"up": [], "down": [], "predicted": []}
        for r in rows:
            item = {"index": r["class_index"], "label": r["label"]}
            item.update({"count": r["count"]} if r["kind"] == "predicted" else {"weight": r["weight"]})
            record[r["kind"]].append(item)
        if path and path["status"] != "ok":
            record.update(status=path["status"], message=path["message"])
        return record

    def layer_votes(self, model_id: str, layer: str) -> dict[int, dict]:
        """{unit: its strongest up vote ({index, label, weight})} for the layer gallery."""
        rows = self._rows("SELECT unit, class_index, label, weight FROM unit_classes "
                          "WHERE model_id = $model AND layer = $layer AND kind = 'up' AND rank = 0",
                          {"model": model_id, "layer": layer})
        return {r["unit"]: {"index": r["class_index"], "label": r["label"], "weight": r["weight"]} for r in rows}

    def find_voters(self, text: str, model_id: str | None = None, limit: int = 100) -> list[dict]:
        """Units (of one model or all) among whose stored up votes is a class whose name holds every word of
        `text` as a whole word (a number also matches that class index), most distinctive vote first: by the
        vote's z-score over all classes, which compares across layers and models where the raw weight does not
        (a linearised path's gain grows with depth). Empty for a text with no words."""
        words = class_words(text)
        if not words:
            return []
        binds: dict = {"model": model_id, "limit": int(limit)}
        tests = []
        for i, word in enumerate(words):
            binds[f"w{i}"] = rf"\b{re.escape(word)}\b"
            test = f"regexp_matches(lower(coalesce(c.label, '')), $w{i})"
            if word.isdigit():
                binds[f"n{i}"] = int(word)
                test = f"({test} OR c.class_index = $n{i})"
            tests.append(test)
        return self._rows(f"""
            SELECT c.model_id, c.layer, l.alias, c.unit, c.rank, c.class_index, c.label, c.weight, c.z
            FROM unit_classes c JOIN layers l USING (model_id, layer)
            WHERE c.kind = 'up' AND ($model IS NULL OR c.model_id = $model) AND {' AND '.join(tests)}
            ORDER BY c.z DESC NULLS LAST, c.weight DESC, c.model_id, l.position, c.unit
            LIMIT $limit
        """, binds)

    SECTION = Section("classes", classes_record, table="unit_classes")
