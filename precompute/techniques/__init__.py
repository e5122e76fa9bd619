"""The techniques, one module each behind the contract of `precompute.techniques.base`, in one registry.

The registry's order is the order of `--techniques all`.
"""

from __future__ import annotations

from precompute.techniques import circuits, classes, dataset_examples, dictionary, featurevis, similar, stats, tuning
from precompute.techniques.base import PassTechnique, Technique

TECHNIQUES: dict[str, Technique] = {t.name: t for t in (
    stats.TECHNIQUE, dataset_examples.TECHNIQUE, tuning.TECHNIQUE, featurevis.TECHNIQUE, circuits.TECHNIQUE,
    similar.TECHNIQUE, classes.TECHNIQUE, dictionary.TECHNIQUE)}
# What `--techniques default` computes: everything but feature visualisation, which costs seconds per unit
# on a CPU (ask for it by name, or with `all`), and dictionaries, which add a layer of features to every layer
# they learn (`--techniques default,dictionary`). Circuits cost about a minute of CPU for the bundled model.
DEFAULT_TECHNIQUES = ("stats", "dataset", "tuning", "circuits", "similar", "classes")

__all__ = ["DEFAULT_TECHNIQUES", "TECHNIQUES", "PassTechnique", "Technique"]
