"""Persisted documents: GraphQL operation texts known by an id, shared by every server process."""

from piccolo.columns import Boolean, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class PersistedDocument(Table, tablename="persisted_document"):
    """Public API text, not tenant data: a document is addressed by its id (the SHA-256 of its text for
    automatic persisted queries, a manifest's id for trusted documents). `pinned`: registered by an operator
    from a client's manifest (`threadline documents register`); only pinned documents run in trusted mode, and
    they are never evicted. The others are bounded (least recently used go first)."""

    id = Varchar(length=200, primary_key=True)
    sha256 = Varchar(length=64)
    body = Text()
    pinned = Boolean(default=False)
    created_at = Timestamptz(default=TimestamptzNow())
    last_used_at = Timestamptz(default=TimestamptzNow())
