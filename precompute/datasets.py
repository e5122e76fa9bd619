"""Image datasets for the passes over images: indexable, streamed in order, unreadable images skipped.

- `sample`: the photographs bundled in scikit-image and scikit-learn, cut into deterministic multi-scale crops.
- `folder:PATH`: every image file under PATH, in sorted path order, centre-cropped to a square.
- `hf:ORG/NAME[@REV]`: an image dataset on the Hugging Face Hub, fetched into the local Hub cache, then read
  like a local folder of the Hub's layout (Parquet shards with an `image` column, or image files).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from store.errors import MicroscopeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Natural photographs that ship inside the scikit-image wheel (no download) and scikit-learn's two samples.
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
                  "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket")
# Crop side as a fraction of the photo's shorter side. Within a scale the crops tile the photo without
# overlap; across scales they do overlap, so one place of a photo comes several times (precompute.places).
CROP_SCALES = (1.0, 0.8, 0.66, 0.5, 0.4, 0.33, 0.28, 0.25, 0.22, 0.2, 0.18)  # about 2,190 crops in all


class DatasetError(MicroscopeError, ValueError):
    """A dataset that cannot be read; the message is one line for the user."""


@dataclass
class Dataset:
    """A fixed, ordered list of items; `load(i)` returns item i as an RGB image of side `size`, or None."""

    name: str
    items: list
    loader: object  # callable(item, size) -> PIL.Image
    describe: object  # callable(item) -> str, a human-readable source for provenance
    # callable(item, size) -> (source, left, top, scale): the source image an item was cut from, and where
    # input pixel p of the item at `size` lies in it (left + p * scale, top + p * scale). None: every item is
    # its own source, named by `describe`, in its own input pixels (a file's centre square at `size`).
    framer: object = None
    # Indices of the items that could not be read. A set, not a counter: the geometry probe and every pass
    # stream the same items, and an unreadable file is one skipped image however often it is met.
    unreadable: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def skipped(self) -> int:
        return len(self.unreadable)

    def load(self, index: int, size: int) -> Image.Image | None:
        try:
            return self.loader(self.items[index], size)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            return None

    def stream(self, size: int, indices: list[int] | None = None) -> Iterator[tuple[int, Image.Image]]:
        """Yields (index, image) in order, skipping and counting the images that cannot be read."""
        for index in range(len(self.items)) if indices is None else indices:
            image = self.load(index, size)
            if image is None:
                self.unreadable.add(index)
                continue
            yield index, image

    def source(self, index: int) -> str:
        return self.describe(self.items[index])

    def frame(self, index: int, size: int) -> tuple[str, float, float, float]:
        """Where item `index`, at side `size`, lies in its source image (see `framer`)."""
        if self.framer is None:
            return self.describe(self.items[index]), 0.0, 0.0, 1.0
        return self.framer(self.items[index], size)


def open_dataset(ref: str) -> Dataset:
    if ref == "sample":
        return sample_dataset()
    if ref.startswith("folder:"):
        return folder_dataset(Path(ref.removeprefix("folder:")), name=ref)
    if ref.startswith("hf:"):
        return hub_dataset(ref)
    raise DatasetError(f"unknown dataset {ref!r}; use sample, folder:PATH or hf:ORG/NAME")


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crops to a square and resizes with antialiasing."""
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))


# ---- sample: deterministic crops of bundled photographs -------------------------------------------------

def _bundled_photos() -> dict[str, np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {f"skimage.{n}": getattr(skimage.data, n)() for n in SKIMAGE_PHOTOS}
    bunch = load_sample_images()
    for filename, image in zip(bunch.filenames, bunch.images):
        photos[f"sklearn.{Path(filename).stem}"] = image
    return photos


@dataclass(frozen=True)
class Crop:
    photo: str
    box: tuple[int, int, int, int]  # left, top, right, bottom in photo pixels


def sample_crops(shapes: dict[str, tuple[int, int]]) -> list[Crop]:
    """Square crops at each scale, spread evenly over the photo without overlapping."""
    crops = []
    for photo, (h, w) in shapes.items():
        for scale in CROP_SCALES:
            side = max(16, int(round(min(h, w) * scale)))
            for y in np.linspace(0, h - side, h // side).round().astype(int):
                for x in np.linspace(0, w - side, w // side).round().astype(int):
                    crops.append(Crop(photo, (int(x), int(y), int(x) + side, int(y) + side)))
    return crops


def crop_frame(crop: Crop, size: int) -> tuple[str, float, float, float]:
    """Where a crop, resized to `size`, lies in its photo (see `Dataset.framer`)."""
    left, top, right, _ = crop.box
    return crop.photo, float(left), float(top), (right - left) / size


_PHOTOS: dict[str, Image.Image] = {}


def sample_dataset() -> Dataset:
    if not _PHOTOS:
        for name, array in _bundled_photos().items():
            _PHOTOS[name] = Image.fromarray(array).convert("RGB")
    shapes = {name: (img.height, img.width) for name, img in _PHOTOS.items()}

    def load(crop: Crop, size: int) -> Image.Image:
        return _PHOTOS[crop.photo].resize((size, size), Image.BICUBIC, box=crop.box, reducing_gap=3.0)

    def describe(crop: Crop) -> str:
        left, top, right, _ = crop.box
        return f"{crop.photo} {right - left}px crop at ({left},{top})"

    return Dataset("sample", sample_crops(shapes), load, describe, framer=crop_frame)


# ---- folder: any tree of images -------------------------------------------------------------------------

def folder_dataset(root: Path, name: str) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found or not a directory: {root}")
    try:
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise DatasetError(f"cannot list {root}: {exc}") from exc
    if not paths:
        raise DatasetError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")

    def load(path: Path, size: int) -> Image.Image:
        with Image.open(path) as image:
            return square(image, size)

    return Dataset(name, paths, load, lambda p: str(p.relative_to(root)))


# ---- hf: an image dataset on the Hugging Face Hub ---------------------------------------------------------

@dataclass(frozen=True)
class ParquetRow:
    path: Path
    row_group: int
    row: int  # within its row group
    index: int  # within its file: what names the image, as row numbers restart in every row group


def hub_dataset(ref: str) -> Dataset:
    repo, _, revision = ref.removeprefix("hf:").partition("@")
    if repo.count("/") != 1:
        raise DatasetError(f"bad Hub dataset {ref!r}: expected hf:ORG/NAME[@REVISION]")
    from huggingface_hub import snapshot_download

    from precompute.hub import fetch_failure

    try:
        folder = snapshot_download(repo, repo_type="dataset", revision=revision or None,
                                   allow_patterns=["*.parquet", *[f"*{s}" for s in IMAGE_SUFFIXES],
                                                   *[f"*{s.upper()}" for s in IMAGE_SUFFIXES]])
    except Exception as exc:  # offline without it, network, auth, missing repo: all one line for the user
        raise DatasetError(fetch_failure(f"dataset {ref}", repo, "dataset", revision, exc)) from exc
    return hub_layout_dataset(Path(folder), name=ref)


def hub_layout_dataset(root: Path, name: str) -> Dataset:
    """A folder in the Hub's dataset layout: Parquet shards with an image column, else image files."""
    shards = sorted(root.rglob("*.parquet"))
    if not shards:
        return folder_dataset(root, name)
    import pyarrow.parquet as pq

    items = []
    for shard in shards:
        meta = pq.ParquetFile(shard).metadata
        start = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            items += [ParquetRow(shard, group, r, start + r) for r in range(rows)]
            start += rows
    cache: dict[tuple[Path, int], list] = {}
    lock = threading.Lock()  # images may be loaded from several threads

    def load(item: ParquetRow, size: int) -> Image.Image:
        key = (item.path, item.row_group)
        with lock:
            if key not in cache:
                cache.clear()  # one row group in memory at a time: streaming in order stays bounded
                table = pq.ParquetFile(item.path).read_row_group(item.row_group)
                column = next((c for c in ("image", "img", "jpg", "png") if c in table.column_names), None)
                if column is None:
                    raise DatasetError(f"{item.path.name} has no image column (image, img, jpg or png)")
                cache[key] = table.column(column).to_pylist()
            cell = cache[key][item.row]
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            raise ValueError("empty image cell")
        with Image.open(io.BytesIO(data)) as image:
            return square(image, size)

    return Dataset(name, items, load, lambda i: f"{i.path.relative_to(root)} row {i.index}")
