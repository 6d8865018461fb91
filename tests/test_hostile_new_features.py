"""Hostile requests against the features of issue 21 (persisted queries, batching, GraphQL over HTTP, the
GraphiQL static route, cursors): each fails on the code as it was before its fix, or pins a bound that held."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import asyncpg
import httpx

from tests.harness import Actor, Loop, ServerThread


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(text)}}


def post(base_url: str, actor: Actor | None, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    return httpx.post(f"{base_url}/graphql", json=body, headers=headers, timeout=60)


def stored_bodies(loop: Loop, dsn: str) -> dict[str, str]:
    async def work() -> dict[str, str]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["id"]: r["body"] for r in await conn.fetch("SELECT id, body FROM persisted_document")}
        finally:
            await conn.close()

    return loop.run(work())


# --- persisted queries ----------------------------------------------------------------------------


def test_apq_does_not_keep_documents_carrying_inline_strings(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    # Inline string values are caller content (a title, a message, a search term): the shared, unscoped
    # document table is not reached by deletes or erasure, so such a document runs but is not kept.
    secret = f"secret-{uuid.uuid4().hex}"
    mutation = f'mutation {{ conversationCreate(input: {{title: "{secret}"}}) {{ id }} }}'
    response = post(server.url, admin, {"query": mutation, "extensions": apq(mutation)})
    assert response.json()["data"]["conversationCreate"]["id"], response.text
    assert not [body for body in stored_bodies(loop, dsn).values() if secret in body]
    miss = post(server.url, admin, {"extensions": apq(mutation)})
    assert miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

    # The same operation with its content in variables is kept as before.
    with_variables = "mutation Create($t: String!) { conversationCreate(input: {title: $t}) { id } }"
    body = {"query": with_variables, "variables": {"t": secret}, "extensions": apq(with_variables)}
    assert post(server.url, admin, body).json()["data"]["conversationCreate"]["id"]
    assert sha(with_variables) in stored_bodies(loop, dsn)


def test_apq_does_not_keep_documents_refused_by_the_query_limits(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    name = f"Wide_{uuid.uuid4().hex[:8]}"
    aliases = " ".join(f"a{i}: viewer {{ id }}" for i in range(40))
    query = f"query {name} {{ {aliases} }}"
    response = post(server.url, admin, {"query": query, "extensions": apq(query)})
    assert response.json().get("errors"), response.text
    assert sha(query) not in stored_bodies(loop, dsn)
