"""The only package that knows SQL or opens DuckDB: the schema, the shard format, ingest (writing) and
read-only queries; and the leaf modules both sides share (errors, config, pictures, stimuli)."""

from store.errors import StoreError

SCHEMA_VERSION = "6"

__all__ = ["SCHEMA_VERSION", "StoreError"]
