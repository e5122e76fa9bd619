"""Which work folder a store builds from when none is named: its own, beside it; an older shared one only
where it cannot hold another store's shards."""

import pytest

from store.errors import MicroscopeError
from store.workdir import default_for


def test_each_store_of_a_folder_gets_its_own_work_folder(tmp_path):
    assert default_for(tmp_path / "a.duckdb") == tmp_path / "a.work"
    assert default_for(tmp_path / "b.duckdb") == tmp_path / "b.work"


def test_an_older_shared_work_folder_beside_its_only_store_is_kept(tmp_path):
    (tmp_path / "work").mkdir()
    assert default_for(tmp_path / "microscope.duckdb") == tmp_path / "work"  # no store yet: a rerun resumes
    (tmp_path / "microscope.duckdb").write_bytes(b"")
    assert default_for(tmp_path / "microscope.duckdb") == tmp_path / "work"


def test_an_older_shared_work_folder_beside_other_stores_is_one_line_saying_how_to_move_it(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "a.duckdb").write_bytes(b"")
    with pytest.raises(MicroscopeError) as failure:
        default_for(tmp_path / "b.duckdb")
    message = str(failure.value)
    assert "\n" not in message
    assert f"mv {tmp_path / 'work'} {tmp_path / 'a.work'}" in message and f"--work {tmp_path / 'work'}" in message


def test_a_store_s_own_work_folder_wins_over_an_older_shared_one(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "a.duckdb").write_bytes(b"")
    (tmp_path / "b.work").mkdir()
    assert default_for(tmp_path / "b.duckdb") == tmp_path / "b.work"
