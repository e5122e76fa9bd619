"""What every part of the read side shares: the helpers of a read-only connection, and how a technique
declares what it adds to `unit --json` and to `info --json`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pandas as pd


@dataclass(frozen=True)
class Section:
    """One key of `unit --json`: `record(store, model_id, layer, unit)` gives its JSON-ready value (None where
    nothing is stored). `table`, for a technique, is its per-unit table: the distinct (layer, unit) pairs in
    it are the units that `info --json` counts as computed by the technique."""

    key: str
    record: Callable[..., object]
    table: str | None = None


class Reader:
    """The connection and the two ways to read from it; every technique's queries build on these. Values are
    always bound as parameters: named ($model, $layer, $unit) in a dict, so that a query says what it binds."""

    con: duckdb.DuckDBPyConnection

    def _rows(self, sql: str, params: dict | None = None) -> list[dict]:
        cur = self.con.cursor()
        try:
            result = cur.execute(sql, params or {})
            names = [d[0] for d in result.description]
            return [dict(zip(names, row)) for row in result.fetchall()]
        finally:
            cur.close()

    def _frame(self, sql: str, params: dict | None = None) -> pd.DataFrame:
        cur = self.con.cursor()
        try:
            return cur.execute(sql, params or {}).df()
        finally:
            cur.close()
