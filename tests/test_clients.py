"""Mainstream clients, unmodified, against the real server (issue 21 "Tests").

- Python `gql` 4: HTTP transport with the schema fetched from the server (so gql validates documents
  against it), a query, a mutation, and a graphql-transport-ws subscription resumed with `since`.
- The Apollo Client 4 and urql 6 examples in examples/ run with node against the test server (skipped only
  when node or npm is missing; CI has them). `npm ci` installs into the example's own node_modules (ignored
  by git) and is skipped when the lockfile has not changed since the last install.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from graphql import GraphQLInterfaceType

from tests.harness import Actor, ServerThread

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import python_gql  # noqa: E402  (the example is a script, not a package)
from python_gql import op  # noqa: E402

NPM_CI_TIMEOUT = 300  # seconds; a cold `npm ci` of either example takes a few seconds on a warm npm cache
EXAMPLE_TIMEOUT = 90


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_gql_http_fetches_schema_and_runs_query_and_mutation(server: ServerThread, admin: Actor) -> None:
    transport = HTTPXAsyncTransport(
        url=f"{server.url}/graphql", headers={"Authorization": f"Bearer {admin.api_key}"}
    )

    async def work() -> tuple[Any, dict[str, Any], dict[str, Any]]:
        async with Client(transport=transport, fetch_schema_from_transport=True) as session:
            created = await session.execute(op(python_gql.CREATE, i={"title": "from gql"}))
            query = gql("query($id: ID!) { conversation(id: $id) { id title } }")
            read = await session.execute(op(query, id=created["conversationCreate"]["id"]))
            return session.client.schema, created, read

    schema, created, read = run(work())
    # The introspected schema is the server's: the stream interface and its implementations are there.
    events = schema.get_type("ConversationStreamEvent")
    assert isinstance(events, GraphQLInterfaceType)
    assert "ThreadActivityEvent" in {t.name for t in schema.get_possible_types(events)}
    assert read["conversation"] == created["conversationCreate"]
    assert read["conversation"]["title"] == "from gql"


def test_gql_validates_against_fetched_schema_and_reports_server_errors(
    server: ServerThread, admin: Actor
) -> None:
    transport = HTTPXAsyncTransport(
        url=f"{server.url}/graphql", headers={"Authorization": f"Bearer {admin.api_key}"}
    )

    async def work() -> tuple[Exception, TransportQueryError]:
        async with Client(transport=transport, fetch_schema_from_transport=True) as session:
            try:
                await session.execute(gql("{ noSuchField }"))
            except Exception as local:  # graphql-core's validation error, raised before sending
                invalid = local
            try:
                await session.execute(op(gql("query($id: ID!) { conversation(id: $id) { id } }"), id="nope"))
            except TransportQueryError as remote:
                return invalid, remote
        raise AssertionError("no error")

    invalid, remote = run(work())
    assert "noSuchField" in str(invalid)
    assert remote.errors and remote.errors[0]["extensions"]["code"]


def test_gql_websocket_subscription_resumes_with_since(server: ServerThread, admin: Actor) -> None:
    """The example's whole flow: subscription from `streamCursor`, a reply, then a resume with `since`."""
    run(python_gql.main(f"{server.url}/graphql", admin.api_key))


def test_gql_websocket_refused_key_is_an_error(server: ServerThread) -> None:
    transport = WebsocketsTransport(
        url=server.ws_url,
        init_payload={"authorization": "Bearer nope"},
        subprotocols=["graphql-transport-ws"],
    )

    async def work() -> None:
        async with Client(transport=transport) as session:
            async for _ in session.subscribe(op(python_gql.EVENTS, c="x")):
                pass

    with pytest.raises(Exception):  # noqa: B017  (gql raises a transport error whose class varies by version)
        run(work())


def npm_install(example: Path) -> None:
    """`npm ci` into the example's node_modules, unless it is already installed from this lockfile."""
    lock = example / "package-lock.json"
    stamp = example / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=example,
        check=True,
        timeout=NPM_CI_TIMEOUT,
        capture_output=True,
    )


@pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("npm")), reason="node and npm are not installed"
)
@pytest.mark.parametrize("example", ["apollo", "urql"])
def test_node_example_runs_against_the_server(example: str, server: ServerThread, admin: Actor) -> None:
    directory = EXAMPLES / example
    npm_install(directory)
    env = {**os.environ, "THREADLINE_URL": f"{server.url}/graphql", "THREADLINE_API_KEY": admin.api_key}
    done = subprocess.run(
        ["node", "index.mjs"], cwd=directory, env=env, timeout=EXAMPLE_TIMEOUT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed with since" in done.stdout
    assert done.stdout.strip().endswith("ok")
