"""The streaming package's own table (the event log itself is events.tables)."""

from piccolo.columns import BigInt, Text, Varchar
from piccolo.table import Table


class StreamCursorKey(Table, tablename="stream_cursor_key"):
    """One row: the random secret per-tenant cursor keys derive from unless THREADLINE_CURSOR_SECRET is set,
    and the highest position a numeric (pre-opaque) cursor may name (streaming.cursors)."""

    id = Varchar(length=16, primary_key=True)
    secret = Text()
    numeric_through = BigInt(default=0)
