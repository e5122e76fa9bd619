import numpy as np
import torch

from precompute.dataset_pass import LayerRecord, Window
from precompute.layers import Geometry, as_maps


def test_window_is_centred_and_stays_inside_the_map():
    win = Window.for_layer(Geometry(height=16, width=16, rf_px=40), input_size=64)  # stride 4: 10 cells
    assert win.cells == 10
    assert win.box(0) == (0, 0, 40, 40)  # corner: shifted inside
    assert win.box(8 * 16 + 8) == (12, 12, 52, 52)  # centre (8,8): cells 3..12
    assert win.box(16 * 16 - 1) == (24, 24, 64, 64)


def test_record_tracks_extremes_moments_and_windows_exactly():
    torch.manual_seed(0)
    win = Window.for_layer(Geometry(height=6, width=6, rf_px=8), input_size=24)
    rec = LayerRecord(units=3, window=win, k=4, reservoir=100, seed=0, device="cpu")
    batches = [torch.randn(5, 3, 6, 6) for _ in range(4)]
    for b, maps in enumerate(batches):
        rec.update(maps, torch.arange(b * 5, b * 5 + 5))
    everything = torch.cat(batches)
    spatial_max = everything.flatten(2).max(2).values  # (20, 3)
    assert rec.count == 20
    top_value, top_index, top_pos, top_heat = rec.top.ranked()
    bottom_value, bottom_index, _, _ = rec.bottom.ranked()
    for unit in range(3):
        order = torch.argsort(spatial_max[:, unit], descending=True)
        assert top_index[:, unit].tolist() == order[:4].tolist()
        assert bottom_index[:, unit].tolist() == order.flip(0)[:4].tolist()
        assert torch.allclose(top_value[:, unit], spatial_max[order[:4], unit])
        assert torch.allclose(bottom_value[:, unit], spatial_max[order.flip(0)[:4], unit])
        for rank in range(4):
            img = int(order[rank])
            pos = int(top_pos[rank, unit])
            y0, x0 = (int(v) for v in win.origin(torch.tensor(pos)))
            expect = everything[img, unit, y0:y0 + win.cells, x0:x0 + win.cells]
            assert torch.allclose(top_heat[rank, unit].float(), expect, atol=1e-2)
    assert torch.allclose(rec.total / 20, spatial_max.double().mean(0))
    values, _, indices = rec.reservoir()
    assert sorted(indices.tolist()) == list(range(20))
    assert np.allclose(np.sort(values[:, 1]), np.sort(spatial_max[:, 1].numpy()))


def test_reservoir_stays_bounded_and_uniform():
    win = Window.for_layer(Geometry(1, 1, 1), 8)
    rec = LayerRecord(units=1, window=win, k=1, reservoir=50, seed=1, device="cpu")
    for start in range(0, 1000, 10):
        index = torch.arange(start, start + 10)
        rec.update(index.to(torch.float32).view(10, 1, 1, 1), index)
    values, _, indices = rec.reservoir()
    assert len(indices) == 50 and len(set(indices.tolist())) == 50
    assert 250 < indices.mean() < 750  # not just the first or last images


def test_as_maps_shapes():
    assert as_maps(torch.zeros(2, 5, 3, 3)).shape == (2, 5, 3, 3)
    assert as_maps(torch.zeros(2, 197, 8)).shape == (2, 8, 14, 14)  # class token dropped
    assert as_maps(torch.zeros(2, 7)).shape == (2, 7, 1, 1)
