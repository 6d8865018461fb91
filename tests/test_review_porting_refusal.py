"""Review of bae9e08: an all-or-nothing import the database could not store because it was unavailable (an
outage, a restart: PostgreSQL's own SQLSTATEs for them) is not refused: it is UNAVAILABLE, to be retried, and no
audit entry says it was refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness import Actor, Loop
from tests.test_import_atomic import _claude
from tests.test_import_refusal_audit import imports
from tests.test_porting_import import IMPORT, sql


@pytest.fixture
def outage(loop: Loop, dsn: str) -> Iterator[None]:
    """While open, storing a message whose text starts with 'outage' fails as PostgreSQL fails while it shuts
    down or starts (cannot_connect_now, 57P03)."""
    sql(
        loop,
        dsn,
        """CREATE FUNCTION test_outage() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.content LIKE 'outage%' THEN
               RAISE EXCEPTION 'the database system is shutting down' USING ERRCODE = '57P03';
           END IF; RETURN NEW; END $$""",
    )
    sql(
        loop,
        dsn,
        "CREATE TRIGGER test_outage BEFORE INSERT ON message FOR EACH ROW EXECUTE FUNCTION test_outage()",
    )
    try:
        yield
    finally:
        sql(loop, dsn, "DROP TRIGGER test_outage ON message")
        sql(loop, dsn, "DROP FUNCTION test_outage()")


def test_an_import_the_database_could_not_store_in_an_outage_is_unavailable_not_refused(
    admin: Actor, loop: Loop, dsn: str, outage: None
) -> None:
    prefix = f"outage-{uuid.uuid4()}"
    data = [
        _claude(f"{prefix}-0", "fine"),
        _claude(f"{prefix}-1", "outage strikes"),
        _claude(f"{prefix}-2", "ok"),
    ]
    response = admin.client.http.post(
        "/graphql", json={"query": IMPORT, "variables": {"i": {"format": "CLAUDE", "data": data}}}
    )
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "UNAVAILABLE", error
    assert response.status_code == 503
    assert imports(admin) == []
    assert sql(loop, dsn, "SELECT count(*) AS n FROM conversation")[0]["n"] == 0
