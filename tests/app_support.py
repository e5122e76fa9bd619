"""What the dashboard tests share: the fixture store's model (built by `app_store` in tests/conftest.py from
APP_FACTORY) and helpers that run a page through AppTest and read what it drew."""

import re
from pathlib import Path
from urllib.parse import parse_qs

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
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


def run(_page: str | None = None, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if _page:
        at.switch_page(f"app_pages/{_page}.py")
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def html(at: AppTest) -> str:
    return "\n".join(h.value for h in at.html)


def tiles(at: AppTest) -> list[int]:
    """Unit numbers of the gallery tiles, in page order."""
    return [int(u) for u in re.findall(r'class="ms-tile[^"]*" href="unit\?[^"]*?unit=(\d+)"', html(at))]


def links(at: AppTest) -> dict[str, dict[str, str]]:
    """page_link label -> its query parameters."""
    return {p.value: {k: v[-1] for k, v in parse_qs(p.proto.query_string).items()} for p in at.get("page_link")}


def texts(at: AppTest) -> str:
    return "\n".join([e.value for e in at.title] + [e.value for e in at.header] + [e.value for e in at.subheader]
                     + [e.value for e in at.markdown] + [e.value for e in at.caption])
