"""Session fixtures: embedded PostgreSQL, migrated database, real server; truncation per test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness import (
    Actor,
    Client,
    EmbeddedDatabase,
    Loop,
    ServerThread,
    create_admin,
    create_database,
    test_settings,
    truncate_all,
    unique,
)
from tests.ws import WsClient

# `threadline serve` started by a test runs one process unless the test asks for more (tests/test_workers.py):
# the default, one per core, would make every such test depend on the machine.
os.environ.setdefault("THREADLINE_WORKERS", "1")


@pytest.fixture(scope="session")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="session")
def pg(loop: Loop) -> Iterator[EmbeddedDatabase]:
    database = EmbeddedDatabase()
    database.start()
    yield database
    database.stop()


@pytest.fixture(scope="session")
def dsn(pg: EmbeddedDatabase, loop: Loop) -> str:
    """The application database, migrated once per session."""
    from threadline.db.migrate import apply_migrations

    url = loop.run(create_database(pg.admin_dsn, "threadline_test"))
    loop.run(apply_migrations(url))
    return url


@pytest.fixture(scope="session")
def server(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest, loop: Loop) -> Iterator[None]:
    # Only tests that touch the database pay for truncation.
    if "dsn" in request.fixturenames:
        loop.run(truncate_all(request.getfixturevalue("dsn")))
    yield


@pytest.fixture
def make_tenant(server: ServerThread, loop: Loop) -> Iterator[Callable[..., Actor]]:
    """Creates a tenant with its admin; returns the admin as an Actor."""
    clients: list[Client] = []

    def make(name: str | None = None) -> Actor:
        actor = create_admin(loop, server.app.state.services.settings.database_url, server.url, name)
        clients.append(actor.client)
        return actor

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def admin(make_tenant: Callable[..., Actor]) -> Actor:
    return make_tenant()


@pytest.fixture
def make_user(server: ServerThread) -> Iterator[Callable[..., Actor]]:
    """Creates a user in `admin`'s tenant through the API (userCreate + apiKeyCreate)."""
    clients: list[Client] = []

    def make(admin: Actor, role: str = "MEMBER", team: str | None = None) -> Actor:
        user = admin.client.ok(
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": f"{unique('u')}@example.com", "role": role, "team": team}},
        )["userCreate"]
        key = admin.client.ok(
            'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "test") { secret } }', {"u": user["id"]}
        )["apiKeyCreate"]["secret"]
        client = Client(server.url, key)
        clients.append(client)
        return Actor(admin.tenant_id, user["id"], key, client)

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def anonymous(server: ServerThread) -> Iterator[Client]:
    client = Client(server.url, None)
    yield client
    client.close()


@pytest.fixture
def ws(server: ServerThread) -> Iterator[Callable[..., WsClient]]:
    """Opens WebSocket clients for actors (on the session's server unless told), closed after the test."""
    opened: list[WsClient] = []

    def open_(actor: Actor, on_server: ServerThread | None = None) -> WsClient:
        client = WsClient((on_server or server).ws_url, actor.api_key)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closed by the server already
            pass


@pytest.fixture
def lean(server: ServerThread) -> Iterator[Any]:
    """The server's lean POST /graphql endpoint (graphql/http_fast.py); a test may turn it off
    (`enabled = False`: every request goes to the stock view) and it is on again afterwards."""
    from threadline.graphql.http_fast import LeanGraphQL

    endpoint = server.app.state.graphql_http
    assert isinstance(endpoint, LeanGraphQL)
    yield endpoint
    endpoint.enabled = True
