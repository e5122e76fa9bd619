"""Where a dataset example lies in its source image, and which examples show the same place of it.

The sample dataset cuts each photo into crops at several scales, so one place of one photo can enter a unit's
top list several times, once per scale. Two examples show the same place when they come from one source and
their boxes, both in the source's pixels, overlap by more than half of the smaller box.
"""

from __future__ import annotations

import numpy as np

SAME_PLACE = 0.5  # overlap, as a fraction of the smaller box, above which two boxes show one place


def to_source(frame: tuple[str, float, float, float], box) -> tuple[str, tuple[int, int, int, int]]:
    """An input-pixel box (left, top, right, bottom) in the source's pixels: `frame` is (source, left, top,
    scale), input pixel p lying at source pixel (left + p * scale, top + p * scale)."""
    source, left, top, scale = frame
    x0, y0, x1, y1 = box
    return source, (round(left + x0 * scale), round(top + y0 * scale), round(left + x1 * scale),
                    round(top + y1 * scale))


def overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The overlap of `box` (4,) with each of `boxes` (n, 4), as a fraction of the smaller of the two."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area = lambda b: np.maximum((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]), 1)  # noqa: E731
    return inter / np.minimum(area(box), area(boxes))


class Places:
    """The places kept so far: `add` keeps a place unless one already kept shows it."""

    def __init__(self):
        self.sources: list[str] = []
        self.boxes = np.zeros((0, 4), dtype=np.float64)

    def shown(self, source: str, box) -> bool:
        same = np.array([s == source for s in self.sources], dtype=bool)
        return bool(same.any() and (overlap(np.asarray(box, dtype=np.float64), self.boxes[same]) > SAME_PLACE).any())

    def add(self, source: str, box) -> bool:
        """True when the place is new (and now kept); False when it repeats one kept before."""
        if self.shown(source, box):
            return False
        self.sources.append(source)
        self.boxes = np.vstack([self.boxes, np.asarray(box, dtype=np.float64)[None]])
        return True


def distinct_ranks(index, pos, k: int, place, places: Places | None = None) -> list[int]:
    """The first `k` ranks of one unit's candidate list (`index`, `pos`: image and argmax position per rank,
    index -1 for none) whose places, `place(index, pos) -> (source, box)`, repeat none kept before, in
    `places` (a fresh set where None), to which they are added."""
    places = Places() if places is None else places
    kept: list[int] = []
    for rank in range(len(index)):
        if len(kept) == k:
            break
        if index[rank] >= 0 and places.add(*place(int(index[rank]), int(pos[rank]))):
            kept.append(rank)
    return kept


def placer(window, frame):
    """`place(index, pos) -> (source, box)`: where the example of dataset item `index` with its argmax at
    `pos` lies in its source image, for a layer's `Window` and a dataset's `frame(index)`, each item's frame
    looked up once."""
    frames: dict[int, tuple] = {}

    def place(index: int, pos: int) -> tuple[str, tuple[int, int, int, int]]:
        if index not in frames:
            frames[index] = frame(index)
        return to_source(frames[index], window.box(pos))

    return place
