"""The pool releases a connection without asyncpg's reset round trip (issue 14): pooled statements leave no
session state behind, and a transaction left open is still rolled back."""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness import Loop

SOURCE = Path(__file__).resolve().parent.parent / "src" / "threadline"

# Statements that would leave session state on a pooled connection (the reset query used to undo them).
# The statement keywords are matched in capitals, as this code base writes SQL (prose says "Set ...").
SESSION_STATE = [
    (re.compile(r"""["']\s*SET\s+(?!LOCAL\b)[a-z_]+\s*(=|TO\b)"""), "SET without LOCAL"),
    (re.compile(r"""["']\s*RESET\s"""), "RESET"),
    (re.compile(r"set_config\([^)]*\bfalse\s*\)", re.IGNORECASE), "set_config(..., false)"),
    (re.compile(r"pg_(try_)?advisory_lock(_shared)?\(", re.IGNORECASE), "a session advisory lock"),
    (re.compile(r"""["']\s*(UN)?LISTEN\s+("?[a-z_.]+"?|\*)\s*;?\s*["']"""), "LISTEN"),
    (re.compile(r"\bDECLARE\s+\w+\s+(BINARY\s+)?(NO\s+)?(SCROLL\s+)?CURSOR\b", re.IGNORECASE), "a cursor"),
    (re.compile(r"\.cursor\("), "a cursor"),
    # A temporary table dropped at commit (ON COMMIT DROP, before the statement's closing quote) is the transaction's.
    (
        re.compile(r"CREATE\s+(TEMP|TEMPORARY)\s(?![^\"']*ON\s+COMMIT\s+DROP)", re.IGNORECASE),
        "a temporary table",
    ),
    (re.compile(r"""["']\s*PREPARE\s"""), "PREPARE"),
]
# Files that hold such statements on connections of their own (never pooled): the migration lock.
OWN_CONNECTIONS = {"db/migrate.py"}


def test_pooled_sql_leaves_no_session_state() -> None:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative in OWN_CONNECTIONS:
            continue
        text = path.read_text()
        for pattern, what in SESSION_STATE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{relative}:{line}: {what}")
    assert not found, (
        "SQL that leaves session state on a pooled connection; the pool no longer resets connections on "
        "release (db.database._keep_session): use the transaction-scoped form, or a connection of its own: "
        + "; ".join(found)
    )


def test_release_sends_no_reset_statement_and_rolls_back(loop: Loop, dsn: str) -> None:
    from threadline.db import Database

    db = loop.run(Database.connect(dsn, 1, 1))
    watcher = loop.run(Database.connect(dsn, 1, 1))
    try:
        pid = loop.run(db.fetchval("SELECT pg_backend_pid()"))

        def last_statement() -> str:
            query = loop.run(watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))
            return str(query)

        # The backend's last statement is the caller's own: nothing was sent on release (asyncpg's default
        # would show `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` here).
        assert last_statement() == "SELECT pg_backend_pid()"
        assert loop.run(db.fetchval("SELECT 41 + 1")) == 42
        assert last_statement() == "SELECT 41 + 1"

        async def settings_in_a_transaction() -> None:
            async with db.transaction() as tx:
                await tx.execute("SET LOCAL statement_timeout = 1234")
                assert await tx.fetchval("SHOW statement_timeout") == "1234ms"

        loop.run(settings_in_a_transaction())
        assert loop.run(db.fetchval("SHOW statement_timeout")) != "1234ms"  # transaction-scoped: gone

        async def left_open() -> None:
            conn = await db.pool.acquire()
            await conn.execute("BEGIN")
            await conn.execute("CREATE TABLE pool_reset_probe (x int)")
            await db.pool.release(conn)  # asyncpg rolls an open transaction back before reuse

        loop.run(left_open())
        assert loop.run(db.fetchval("SELECT to_regclass('pool_reset_probe') IS NULL")) is True
        assert loop.run(db.fetchval("SELECT pg_backend_pid()")) == pid  # the same connection, reused
    finally:
        loop.run(db.close())
        loop.run(watcher.close())
