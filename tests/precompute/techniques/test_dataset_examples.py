"""Distinct examples: a unit's examples never show one place of one source image twice, on a planted case
whose answer is known by construction."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from precompute.dataset_pass import dataset_pass
from precompute.datasets import Crop, Dataset, crop_frame, sample_dataset
from precompute.layers import Geometry
from precompute.models import Layer, ModelSpec
from precompute.places import overlap
from precompute.techniques.dataset_examples import rows

SIZE = 32


def _photos() -> dict[str, Image.Image]:
    """P: black, a white square at 96-160 and a half-grey one at 0-32; Q0..Q7: uniform dim greys."""
    p = np.zeros((256, 256, 3), dtype=np.uint8)
    p[96:160, 96:160] = 255
    p[0:32, 0:32] = 128
    photos = {"P": Image.fromarray(p)}
    for i in range(8):
        photos[f"Q{i}"] = Image.fromarray(np.full((128, 128, 3), 3 + 3 * i, dtype=np.uint8))
    return photos


# The white square's crops at five scales, all holding it: in a crop's own pixels they are all one box, in
# the photo's they nest, so they show one place. The grey corner is another place of the same photo; the Q
# crops share their boxes' coordinates with each other but not a source.
P_CROPS = [(96, 96, 160, 160), (80, 80, 176, 176), (64, 64, 192, 192), (48, 48, 208, 208), (32, 32, 224, 224)]


def _dataset() -> Dataset:
    photos = _photos()
    items = [Crop("P", box) for box in P_CROPS] + [Crop("P", (0, 0, 32, 32))]
    items += [Crop(f"Q{i}", (0, 0, 128, 128)) for i in range(8)]

    def load(crop, size):
        return photos[crop.photo].resize((size, size), Image.BILINEAR, box=crop.box)

    return Dataset("planted", items, load, lambda c: f"{c.photo} {c.box}", framer=crop_frame)


def _brightness() -> nn.Module:
    """Unit 0 of layer "1": the crop's mean brightness (a 1x1 map, so an example's box is its whole crop)."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1 / 3)
        conv.bias.zero_()
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1)).eval()


def _examples(k: int, candidates: int):
    dataset = _dataset()
    spec = ModelSpec("planted", "brightness", "factory", SIZE, (0.0,) * 3, (1.0,) * 3, layers=(Layer("1", 1),))
    records = dataset_pass(_brightness(), spec, ["1"], {"1": Geometry(1, 1, SIZE)}, dataset, "cpu",
                           k=candidates, reservoir=100, seed=0, batch_size=4, progress=False)
    table = rows(records["1"], "planted", "1", 0, 1, "run", image_id=str,
                 frame=lambda i: dataset.frame(i, SIZE), k=k)
    return dataset, table.to_pylist()


def test_one_place_of_one_photo_counts_once_and_the_list_is_refilled_from_further_down():
    dataset, examples = _examples(k=4, candidates=16)
    top = [e for e in examples if e["kind"] == "top"]
    # Without the rule the top four would be the white square three times and the grey corner.
    assert [dataset.items[int(e["image_id"])].photo for e in top] == ["P", "P", "Q7", "Q6"]
    assert [e["source_box"] for e in top[:2]] == [[96, 96, 160, 160], [0, 0, 32, 32]]  # the best crop of each
    assert [e["rank"] for e in top] == [0, 1, 2, 3]
    assert all(e["source_image"] == dataset.items[int(e["image_id"])].photo for e in examples)


def test_no_list_of_a_unit_shows_the_same_place_twice():
    _, examples = _examples(k=4, candidates=16)
    for kind in ("top", "bottom", "quantile"):
        listed = [e for e in examples if e["kind"] == kind]
        for a, b in itertools.combinations(listed, 2):
            if a["source_image"] == b["source_image"]:
                assert overlap(np.array(a["source_box"], float), np.array([b["source_box"]], float))[0] <= 0.5
    # 10 places in all (the square, the corner, eight Q photos): 11 quantiles find 10 of them.
    assert [len([e for e in examples if e["kind"] == kind]) for kind in ("top", "bottom", "quantile")] == [4, 4, 10]


def test_boxes_are_compared_in_the_photo_s_pixels_not_the_crop_s():
    """The five crops of the square give five different input-pixel boxes that map to nested photo boxes."""
    dataset, _ = _examples(k=4, candidates=16)
    frames = [dataset.frame(i, SIZE) for i in range(5)]
    assert [f[0] for f in frames] == ["P"] * 5
    assert frames[1] == ("P", 80.0, 80.0, 3.0)  # a 96 px crop at 32 px: three photo pixels per input pixel


@pytest.mark.parametrize("index", [0, 500, 2000])
def test_a_sample_crop_s_whole_box_maps_back_to_the_crop_in_its_photo(index):
    dataset = sample_dataset()
    source, left, top, scale = dataset.frame(index, 224)
    crop = dataset.items[index]
    assert source == crop.photo
    assert (round(left), round(top), round(left + 224 * scale), round(top + 224 * scale)) == crop.box
