"""Layer geometry on convolution stacks whose receptive fields are known by construction, and the two things
it decides: the crop box of a dataset example (dataset_pass.Window) and the tuning margin (tuning.margin)."""

import torch
from torch import nn

from precompute.dataset_pass import MIN_CROP_PX, Window
from precompute.layers import geometry
from precompute.models import HALF, Layer, ModelSpec
from precompute.techniques.tuning import margin

SIZE = 128


def tiling_stack() -> nn.Sequential:
    """Layer "0": a 4x4 kernel of ones at stride 4, so each cell reads its own 4 px patch, disjoint from its
    neighbours'; layer "1": a 9x9 kernel of ones over those cells at stride 1, so each cell reads 9 adjacent
    patches: a square of 36 px in which every pixel counts once. A uniform square holds 90% of its gradient
    only as a whole (34 px hold 89%), so the effective receptive fields are exactly 4 and 36 px."""
    model = nn.Sequential(nn.Conv2d(3, 1, 4, stride=4, bias=False), nn.Conv2d(1, 1, 9, padding=4, bias=False))
    with torch.no_grad():
        for conv in model:
            conv.weight.fill_(1.0)
    return model.eval()


def spec(layers: list[str]) -> ModelSpec:
    return ModelSpec("stack", "stack", "factory", SIZE, HALF, HALF, layers=tuple(Layer(n, 1) for n in layers))


def images() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_receptive_fields_of_a_tiling_stack():
    geo = geometry(tiling_stack(), spec(["0", "1"]), images())
    assert (geo["0"].height, geo["0"].width, geo["0"].rf_px) == (32, 32, 4)
    assert (geo["1"].height, geo["1"].width, geo["1"].rf_px) == (32, 32, 36)


def test_the_effective_field_is_where_the_weight_is_not_the_kernel_size():
    """A 5x5 kernel with 97.7% of its weight on the centre tap: the effective field is that one pixel. (The rim
    weight is a power of two so that the gradient's centroid, summed in float32, is exactly the centre.)"""
    conv = nn.Conv2d(3, 1, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(2.0 ** -10)
        conv.weight[:, :, 2, 2] = 1.0
    geo = geometry(nn.Sequential(conv).eval(), spec(["0"]), images())
    assert (geo["0"].height, geo["0"].rf_px) == (SIZE, 1)


def test_the_receptive_field_is_the_dataset_crop():
    geo = geometry(tiling_stack(), spec(["0", "1"]), images())
    window = Window.for_layer(geo["1"], SIZE)
    assert window.cells == 9  # 36 px at 4 px per cell
    # The centre cell (16, 16) reads layer-0 cells 12..20, i.e. input pixels 48..83: its crop is that square.
    assert window.box(16 * 32 + 16) == (48, 48, 84, 84)
    assert window.box(0) == (0, 0, 36, 36)  # a corner's crop moves inside the image and keeps its size
    # A field narrower than MIN_CROP_PX is shown with context around it, never as a few pixels.
    small = Window.for_layer(geo["0"], SIZE)
    left, top, right, bottom = small.box(16 * 32 + 16)
    assert right - left == bottom - top == MIN_CROP_PX


def test_the_receptive_field_sets_the_tuning_margin():
    geo = geometry(tiling_stack(), spec(["0", "1"]), images())
    cells = margin(geo["1"], SIZE)
    assert cells == 5  # ceil(36 / 2 / 4)

    def inside(y: int) -> bool:  # cell y of layer "1" reads input rows 4y - 16 .. 4y + 19
        return 4 * y - 16 >= 0 and 4 * y + 20 <= SIZE

    # Every cell the spatial max keeps reads only the stimulus, never the padding past its edge; the margin
    # leaves out at most one cell more at each side than those that do.
    assert all(inside(y) for y in range(cells, geo["1"].height - cells))
    assert not inside(cells - 2) and not inside(geo["1"].height - cells + 1)
    assert margin(geo["0"], SIZE) == 1  # a 4 px field inside its own 4 px cell: the rounding's one cell
