import os, sys
from pathlib import Path
from tests.app_support import run, html, texts, MODEL_ID
import tempfile
from precompute.models import Overrides
from precompute.pipeline import precompute
from precompute.request import Request
from tests.app_support import APP_FACTORY
d = Path(tempfile.mkdtemp()); f = d/"tiny_app_model.py"; f.write_text(APP_FACTORY)
precompute(Request(model=f"{f}:build", store=d/"s.duckdb", max_images=64, progress=False, overrides=Overrides(name=MODEL_ID, input_size=64)))
os.environ["MICROSCOPE_STORE"] = str(d/"s.duckdb")
print(d)
at = run("unit", model=MODEL_ID, layer="2", unit="3", view="classes")
print(texts(at)[:2000]); print(html(at)[:1500])
at = run("layer", model=MODEL_ID, layer="2")
print(html(at).count("ms-vote"))
at = run("search", q="class:12")
print(texts(at)[-1500:]); print(html(at)[:800])
at = run("search", votes="12")
print(len(html(at)))
