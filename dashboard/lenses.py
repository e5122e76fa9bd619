"""Lenses (techniques) of the unit page. A later technique (featurevis, tuning, circuits) plugs in as one
entry here: its `?view=` name, a label, and a render function taking the UnitRef."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dashboard import lens_circuits, lens_dataset, lens_featurevis, lens_stats, lens_tuning
from dashboard.params import UnitRef


@dataclass(frozen=True)
class Lens:
    label: str
    render: Callable[[UnitRef], None]


LENSES = {
    "dataset": Lens("Dataset examples", lens_dataset.render),
    "featurevis": Lens("Feature visualisation", lens_featurevis.render),
    "stats": Lens("Statistics", lens_stats.render),
    "tuning": Lens("Tuning curves", lens_tuning.render),
    "circuits": Lens("Circuit neighbours", lens_circuits.render),
}
DEFAULT = "dataset"
