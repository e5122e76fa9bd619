"""Fixtures for the dashboard tests: a store built by the real pipeline from a tiny factory model."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Layers "0" (8 units, unit 0 dead: zero weights make it constant), "2" (16 units) and "6" (200 units, more than
# one gallery page). The model id needs URL-encoding, so links that forget to encode it break the tests.
APP_FACTORY = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 200),
    )
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].bias[0] = 0.0
    return model
'''
MODEL_ID = "tiny net/v1&x"
LAYERS = {"0": 8, "2": 16, "6": 200}


@pytest.fixture(scope="session")
def app_store(tmp_path_factory) -> Path:
    from precompute.models import Overrides
    from precompute.pipeline import precompute
    from precompute.request import Request

    folder = tmp_path_factory.mktemp("app_store")
    factory = folder / "tiny_app_model.py"
    factory.write_text(APP_FACTORY)
    store = folder / "s.duckdb"
    precompute(Request(model=f"{factory}:build", store=store, max_images=64, progress=False,
                       overrides=Overrides(name=MODEL_ID, input_size=64)))
    return store


@pytest.fixture
def store_env(app_store, monkeypatch) -> Path:
    monkeypatch.setenv("MICROSCOPE_STORE", str(app_store))
    return app_store


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, one per test module (tests/app/browser_support.py)."""
    from playwright.sync_api import sync_playwright

    from browser_support import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
