"""Migrations: applied to an empty database, they build exactly the Piccolo tables."""

from __future__ import annotations

import asyncpg

from tests.harness import EmbeddedDatabase, Loop, create_database
from threadline.db.migrate import apply_migrations
from threadline.db.tables import ALL_TABLES

# Columns maintained by raw SQL in migrations (Piccolo has no column type for them).
RAW_COLUMNS: dict[str, set[str]] = {
    "conversation": {"search_vector"},  # search: kept by a trigger
    "message": {"search_vector"},  # search: kept by a trigger
    "stream_event": {"message_id"},  # events.scrub: generated from the payload
    "message_embedding": {"embedding"},  # embeddings: a pgvector column
}

_TYPE_NAMES = {
    "UUID": "uuid",
    "TEXT": "text",
    "JSONB": "jsonb",
    "BYTEA": "bytea",
    "BOOLEAN": "boolean",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "TIMESTAMPTZ": "timestamp with time zone",
}


def _expected_type(column_type: str) -> str:
    if column_type.endswith("[]"):
        return "ARRAY"
    if column_type.startswith("VARCHAR"):
        return "character varying"
    return _TYPE_NAMES[column_type]


def test_migrations_build_every_piccolo_table_and_column(pg: EmbeddedDatabase, loop: Loop) -> None:
    url = loop.run(create_database(pg.admin_dsn, "threadline_migration_check"))
    loop.run(apply_migrations(url))

    async def columns() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(
                """SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
                   WHERE table_schema = 'public'"""
            )
        finally:
            await conn.close()

    found: dict[str, dict[str, tuple[str, bool]]] = {}
    for row in loop.run(columns()):
        found.setdefault(row["table_name"], {})[row["column_name"]] = (
            row["data_type"],
            row["is_nullable"] == "YES",
        )

    expected_tables = {t._meta.tablename for t in ALL_TABLES}
    assert expected_tables <= set(found), f"tables missing: {expected_tables - set(found)}"
    assert set(found) - expected_tables == {"migration"}, "a table exists that no Piccolo Table declares"
    for table in ALL_TABLES:
        name = table._meta.tablename
        expected = {
            c._meta.db_column_name: (_expected_type(c.column_type), c._meta.null) for c in table._meta.columns
        }
        actual = {k: v for k, v in found[name].items() if k not in RAW_COLUMNS.get(name, set())}
        assert actual == expected, f"table {name} differs from its Piccolo Table"


def test_migrations_are_idempotent(pg: EmbeddedDatabase, loop: Loop) -> None:
    url = loop.run(create_database(pg.admin_dsn, "threadline_migration_twice"))
    loop.run(apply_migrations(url))
    assert "No migrations" in loop.run(apply_migrations(url))
