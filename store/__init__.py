"""The only package that knows SQL or opens DuckDB: the schema, ingest (writing) and read-only queries."""

SCHEMA_VERSION = "1"


class StoreError(RuntimeError):
    """A store that cannot be read or written; the message is one line for the user."""
