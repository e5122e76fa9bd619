"""A store of another schema version: every page shows the one line that says how to rebuild it, and nothing
else of the page (no traceback, no half-drawn lens)."""

import shutil

import duckdb
import pytest

from store import SCHEMA_VERSION
from tests.app_support import MODEL_ID, run

pytestmark = pytest.mark.app


def test_an_older_store_shows_how_to_rebuild_it_on_every_page(app_store, tmp_path, monkeypatch):
    old = tmp_path / "old.duckdb"
    shutil.copy(app_store, old)
    con = duckdb.connect(str(old))
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    monkeypatch.setenv("MICROSCOPE_STORE", str(old))
    line = (f"store {old.resolve()} has schema 1; this version of Microscope reads {SCHEMA_VERSION}: "
            "rebuild it with `microscope ingest`")

    for page, params in ((None, {}), ("model", {"model": MODEL_ID}), ("layer", {"model": MODEL_ID, "layer": "2"}),
                         ("unit", {"model": MODEL_ID, "layer": "2", "unit": "3", "view": "stats"})):
        at = run(page, **params)  # fails on any exception
        assert [e.value for e in at.error] == [line], page
        assert not at.title and not at.header and not at.subheader and not at.get("plotly_chart"), page
        assert not at.caption and not at.markdown and not at.warning, page  # one instruction, not two
