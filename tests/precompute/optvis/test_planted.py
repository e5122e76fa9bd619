"""Issue 15: on a planted Gabor bank (tests/planted.py) whose best images are known, the default preset's channel
pictures reach at least half of the optimal grating's activation and draw each filter's orientation."""

import numpy as np
import pytest

from precompute.optvis import objectives as O
from precompute.optvis import render as R
from precompute.optvis.presets import MIN_WINDOW_PX, effective_window
from tests import planted as P

pytestmark = pytest.mark.integration


def test_the_orientation_measure_reads_gratings():
    for g in P.gabors():
        image = (P.grating(g, P.INPUT, 0.3, square=False) * 255).astype(np.uint8)
        assert P.angle_error(P.spectrum_orientation(image), g.degrees) < 2, g


def test_the_optimum_is_a_grating_that_beats_the_other_orientations():
    units = P.gabors()
    model = P.bank(units, opponents=False)
    best = P.optimum(model, units)
    assert (best > 0.25).all(), best
    crossed = np.stack([P.grating(P.Gabor(g.wavelength, g.degrees + 90), P.INPUT, 0, True) for g in units])
    score = R.achieved(model, O.channels(P.LAYER, list(range(len(units)))), (crossed * 255).astype(np.uint8),
                       input_size=P.INPUT, mean=P.MEAN, std=P.STD)
    assert (score < 0.2 * best).all(), score / best


def test_default_preset_recovers_the_planted_gratings():
    units = P.gabors()  # 8 orientations, wavelengths 4 to 10 px
    model = P.bank(units, opponents=False)
    images, achieved = R.render_units(model, P.spec(len(units)), P.LAYER, list(range(len(units))), batch=8)
    best = P.optimum(model, units)
    errors = [P.angle_error(P.spectrum_orientation(im), g.degrees) for im, g in zip(images, units)]
    assert sum(e <= 15 for e in errors) >= 7, errors
    assert achieved.mean() >= 0.5 * best.mean(), achieved / best


def test_windows_narrower_than_the_floor_show_the_whole_view():
    assert effective_window(0.5, 224) == 0.5  # the bundled models' 112 px windows stay
    assert effective_window(0.5, 64) is None and effective_window(1.0, 224) is None
    assert effective_window(0.5, 2 * MIN_WINDOW_PX) == 0.5 and effective_window(0.5, 2 * MIN_WINDOW_PX - 2) is None
