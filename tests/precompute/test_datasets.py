import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from precompute.datasets import DatasetError, hub_layout_dataset, open_dataset, sample_dataset


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_sample_has_at_least_2000_deterministic_crops():
    a, b = sample_dataset(), sample_dataset()
    assert len(a) >= 2000
    assert a.items == b.items
    first = a.load(0, 64)
    assert first.size == (64, 64) and first.tobytes() == b.load(0, 64).tobytes()
    assert {c.photo.split(".")[0] for c in a.items} == {"skimage", "sklearn"}
    assert len({c.box[2] - c.box[0] for c in a.items}) > 50  # many scales
    # Within a photo and scale, crops never overlap.
    by_scale = {}
    for c in a.items:
        by_scale.setdefault((c.photo, c.box[2] - c.box[0]), []).append(c.box)
    for boxes in by_scale.values():
        for i, p in enumerate(boxes):
            for q in boxes[i + 1:]:
                assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]


def test_folder_skips_and_counts_unreadable_images(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "a.png").write_bytes(_png("red"))
    (tmp_path / "cls" / "b.jpg").write_bytes(b"not an image at all")
    (tmp_path / "c.png").write_bytes(_png("blue"))
    (tmp_path / "notes.txt").write_text("ignored")
    ds = open_dataset(f"folder:{tmp_path}")
    assert len(ds) == 3
    got = list(ds.stream(32))
    # Sorted paths: c.png, cls/a.png, cls/b.jpg (unreadable).
    assert [i for i, _ in got] == [0, 1] and ds.skipped == 1
    assert got[0][1].size == (32, 32) and got[0][1].getpixel((5, 5)) == (0, 0, 255)
    # Streamed again (a probe, then a pass), the unreadable file is still one skipped image.
    assert [i for i, _ in ds.stream(16)] == [0, 1] and ds.skipped == 1 and ds.unreadable == {2}


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DatasetError, match="no image files"):
        open_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("imagenet")


def test_hub_layout_reads_parquet_image_column(tmp_path):
    # The layout `datasets` pushes to the Hub: data/<split>-NNNNN-of-NNNNN.parquet with an image struct column.
    (tmp_path / "data").mkdir()
    table = pa.table({"image": [{"bytes": _png("green"), "path": "g.png"}, {"bytes": b"", "path": "x"},
                                {"bytes": _png("red"), "path": "r.png"}], "label": [0, 1, 2]})
    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    ds = hub_layout_dataset(tmp_path, "hf:org/name")
    got = list(ds.stream(16))
    assert [i for i, _ in got] == [0, 2] and ds.skipped == 1
    assert got[1][1].getpixel((3, 3)) == (255, 0, 0)
    assert "row 2" in ds.source(2)


def test_hub_reference_is_validated():
    with pytest.raises(DatasetError, match="expected hf:ORG/NAME"):
        open_dataset("hf:justname")
