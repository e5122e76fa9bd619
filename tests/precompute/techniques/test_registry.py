"""The technique registry against its contract (precompute/techniques/base.py) and the store's schema."""

import duckdb
import pyarrow as pa
import pytest

from precompute import jobs, runner
from precompute.techniques import DEFAULT_TECHNIQUES, TECHNIQUES, PassTechnique, Technique
from store.ingest import schema_sql


def test_registry_order_and_default():
    assert list(TECHNIQUES) == ["stats", "dataset", "tuning", "featurevis", "circuits", "similar", "classes",
                               "dictionary"]
    assert DEFAULT_TECHNIQUES == ("stats", "dataset", "tuning", "circuits", "similar", "classes")
    assert [name for name, t in TECHNIQUES.items() if t.shares_pass] == ["stats", "dataset", "similar", "classes"]
    assert [name for name, t in TECHNIQUES.items() if t.shares_pass and t.needs_predictions] == ["classes"]


def test_every_technique_declares_its_contract():
    con = duckdb.connect()
    con.execute(schema_sql())
    columns = {t: {r[0] for r in con.execute(f"DESCRIBE {t}").fetchall()}
               for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    unit_keys = [t.unit_key for t in TECHNIQUES.values()]
    assert len(set(unit_keys)) == len(unit_keys)
    for name, technique in TECHNIQUES.items():
        assert technique.name == name and isinstance(technique.VERSION, int) and technique.tables
        for table in technique.tables:  # rows of a run (run_id); the dataset's image listing is the exception
            assert table in columns and ("run_id" in columns[table] or table == "images"), (name, table)
        # One way of computing rows, the one its kind says.
        hook = "from_pass" if technique.shares_pass else "run"
        assert isinstance(technique, PassTechnique) == technique.shares_pass
        assert getattr(type(technique), hook) is not getattr(PassTechnique if technique.shares_pass else Technique,
                                                             hook), name


def test_default_plan_is_unit_chunks(monkeypatch):
    monkeypatch.setattr(jobs, "UNIT_CHUNK", 4)
    planned = TECHNIQUES["stats"].plan("m", {"a": list(range(10)), "b": [3, 4]}, {"seed": 0})
    assert [(j.layer, j.technique, j.unit_start, j.unit_stop) for j in planned] == [
        ("a", "stats", 0, 4), ("a", "stats", 4, 8), ("a", "stats", 8, 10), ("b", "stats", 3, 5)]
    assert {j.params for j in planned} == {jobs.canonical({"seed": 0})}


class Declares(Technique):
    name = "declares"
    VERSION = 1
    tables = ("unit_stats",)
    unit_key = "declares"


def test_a_shard_holds_only_declared_tables(tmp_path):
    job = jobs.Job("m", "l", "declares", 0, 1, "{}")
    with pytest.raises(RuntimeError, match="returned table 'tuning', which it does not declare"):
        runner._write(Declares(), job, {"tuning": pa.table({"unit": [0]})}, {}, tmp_path)
    assert not job.done(tmp_path)
    runner._write(Declares(), job, {"unit_stats": pa.table({"unit": [0]})}, {}, tmp_path)
    assert job.done(tmp_path)
