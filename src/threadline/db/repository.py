"""SQL fragments shared by the domain repositories (the statements themselves stay in each domain's
`repository.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def older_than(columns: str, after: Sequence[Any] | None, params: list[Any]) -> str:
    """The keyset condition of a newest-first page: ` AND (columns) < ($n-1, $n)`, binding the (time, id)
    of the previous page's last row into `params`; "" for the first page. One home for the rule, so that
    every newest-first list pages the same way (strictly after the cursor, ties broken by id)."""
    if after is None:
        return ""
    params.extend(after)
    return f" AND ({columns}) < (${len(params) - 1}, ${len(params)})"


# Builtin array types the statements bind or return (every `::x[]` in the code, and the arrays statements build):
# asyncpg learns their codecs from this one statement when a connection opens (db.database).
_ARRAY_ELEMENTS = ("uuid", "text", "varchar", "int2", "int4", "int8", "bytea", "timestamptz", "bool", "float8", "jsonb")  # fmt: skip
ARRAY_TYPES = "SELECT " + ", ".join(f"NULL::{t}[]" for t in _ARRAY_ELEMENTS)
