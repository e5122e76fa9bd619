"""The registry of the unit page's lenses, in the order the page offers them. A lens is one module of this
package that satisfies `Lens`: its `?view=` name, its label, the URL parameters of its own that prev/next unit
links keep while it is shown, and `render(ref)`. Adding a lens is one module and one entry in `LENSES`.

The lens modules declare plain module-level names rather than importing a base class from here, so that
nothing in the package imports the package back."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dashboard.lenses import circuits, classes, dataset, dictionary, featurevis, similar, stats, tuning
from dashboard.params import UnitRef


@runtime_checkable
class Lens(Protocol):
    NAME: str  # the `?view=` value
    LABEL: str
    KEEP: tuple[str, ...]  # its URL parameters that stay on prev/next links (e.g. a display switch)

    def render(self, ref: UnitRef) -> None: ...


LENSES: dict[str, Lens] = {lens.NAME: lens for lens in (dataset, featurevis, stats, tuning, circuits, similar, classes,
                                                         dictionary)}
DEFAULT = "dataset"
