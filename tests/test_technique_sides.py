"""A technique has two sides, the offline one (precompute.techniques) and the read side (store.queries): they
must name the same techniques, the same `unit --json` keys, and tables that the schema holds."""

from precompute.techniques import TECHNIQUES
from store.ingest import schema_sql
from store.queries import READERS, SECTIONS


def test_every_technique_is_read_back_under_its_key():
    computed = [technique.unit_key for technique in TECHNIQUES.values()]
    read = [section.key for section in SECTIONS if section.table]
    assert computed == read == [reader.SECTION.key for reader in READERS]


def test_what_the_read_side_counts_is_a_table_some_technique_fills():
    filled = {table for technique in TECHNIQUES.values() for table in technique.tables}
    for section in SECTIONS:
        if section.table:
            assert section.table in filled and f"CREATE TABLE {section.table} (" in schema_sql(), section.key
