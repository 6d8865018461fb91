"""Persisted documents (issue 21 item 2): automatic persisted queries as Apollo's and urql's links speak them
(hash first, `PersistedQueryNotFound`, hash with text), shared by two server processes on one database,
bounded; GET with a hash; trusted-documents mode; `threadline documents register` with both manifest formats."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import TEST_JWT_SECRET, Actor, Loop, ServerThread, serve_process, test_settings
from tests.ws import WsClient

THREADLINE = [sys.executable, "-m", "threadline.cli"]


def viewer_query() -> str:
    """A query no earlier test sent (each server process keeps the documents it has seen)."""
    return f"query Viewer_{uuid.uuid4().hex[:10]} {{ viewer {{ id }} }}"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(sha256: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256}}


def post(base_url: str, actor: Actor | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    return httpx.post(f"{base_url}/graphql", json=body, headers=headers, timeout=60)


def get(base_url: str, actor: Actor | None, params: dict[str, str]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    return httpx.get(f"{base_url}/graphql", params=params, headers=headers, timeout=60)


def first_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body.get("errors"), body
    error: dict[str, Any] = body["errors"][0]
    return error


def stored(loop: Loop, dsn: str) -> dict[str, bool]:
    """The persisted documents in the database: id -> pinned."""

    async def work() -> dict[str, bool]:
        conn = await asyncpg.connect(dsn)
        try:
            return {
                r["id"]: r["pinned"] for r in await conn.fetch("SELECT id, pinned FROM persisted_document")
            }
        finally:
            await conn.close()

    return loop.run(work())


@pytest.fixture(scope="module")
def other(dsn: str) -> Iterator[str]:
    """A second `threadline serve` process on the session database; its base URL."""
    with serve_process(dsn, THREADLINE_JWT_SECRET=TEST_JWT_SECRET, THREADLINE_RUN_WORKERS="0") as url:
        yield url


@pytest.fixture(scope="module")
def trusted(dsn: str, server: ServerThread) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, trusted_documents=True))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def bounded(dsn: str, server: ServerThread) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn, migrate_on_start=False, persisted_documents_max=2, persisted_document_max_bytes=200
        )
    )
    srv.start()
    yield srv
    srv.stop()


def register(dsn: str, manifest: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*THREADLINE, "documents", "register", str(manifest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


# --- automatic persisted queries ------------------------------------------------------------------


def test_apq_miss_then_register_then_hit_on_another_process(
    admin: Actor, server: ServerThread, other: str, loop: Loop, dsn: str
) -> None:
    query = viewer_query()
    hash_only = {"extensions": apq(sha(query))}

    # The hash alone, unknown: what Apollo's and urql's links retry on (message or code), with HTTP 200.
    miss = post(server.url, admin, hash_only)
    assert miss.status_code == 200
    error = first_error(miss)
    assert error["message"] == "PersistedQueryNotFound"
    assert error["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert first_error(post(other, admin, hash_only))["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

    # The hash with the text: runs, and is kept.
    registered = post(server.url, admin, {"query": query, **hash_only})
    assert registered.status_code == 200
    assert registered.json()["data"]["viewer"]["id"] == admin.user_id
    assert sha(query) in stored(loop, dsn)

    # The hash alone now runs on both processes (the other one never saw the text).
    for base_url in (other, server.url):
        hit = post(base_url, admin, hash_only)
        assert hit.status_code == 200
        assert hit.json()["data"]["viewer"]["id"] == admin.user_id, hit.text


def test_hash_that_does_not_match_the_text_is_refused_and_not_kept(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    query = viewer_query()
    wrong = sha(query + " ")
    error = first_error(post(server.url, admin, {"query": query, "extensions": apq(wrong)}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == "provided sha does not match query"
    assert wrong not in stored(loop, dsn)
    # The hash alone still names nothing: the text was not registered under the wrong hash.
    assert (
        first_error(post(server.url, admin, {"extensions": apq(wrong)}))["message"]
        == "PersistedQueryNotFound"
    )


def test_malformed_persisted_query_extension_is_bad_input(admin: Actor, server: ServerThread) -> None:
    for extension in ({"version": 2, "sha256Hash": "0" * 64}, {"version": 1, "sha256Hash": "abc"}, "x"):
        error = first_error(post(server.url, admin, {"extensions": {"persistedQuery": extension}}))
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error


def test_anonymous_callers_do_not_register(
    anonymous: Any, server: ServerThread, loop: Loop, dsn: str
) -> None:
    query = f"query Public_{uuid.uuid4().hex[:10]} {{ __typename }}"
    response = post(server.url, None, {"query": query, "extensions": apq(sha(query))})
    assert response.json()["data"] == {"__typename": "Query"}  # it runs
    assert sha(query) not in stored(loop, dsn)  # but is not kept
    assert (
        first_error(post(server.url, None, {"extensions": apq(sha(query))}))["message"]
        == "PersistedQueryNotFound"
    )


def test_get_with_a_hash_only_runs_queries_but_not_mutations(
    admin: Actor, server: ServerThread, other: str
) -> None:
    query = viewer_query()
    params = {"extensions": json.dumps(apq(sha(query)))}
    # httpx sends Accept: */*, as curl does: a GET naming a document is an operation, not the GraphiQL page.
    miss = get(server.url, admin, params)
    assert miss.status_code == 200
    assert first_error(miss)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert post(server.url, admin, {"query": query, "extensions": apq(sha(query))}).status_code == 200
    for base_url in (server.url, other):
        hit = get(base_url, admin, params)
        assert hit.status_code == 200
        assert hit.json()["data"]["viewer"]["id"] == admin.user_id, hit.text

    # A mutation persisted over POST stays refused over GET.
    mutation = f"mutation M_{uuid.uuid4().hex[:8]}($t: String!) {{ conversationCreate(input: {{title: $t}}) {{ id }} }}"
    body = {"query": mutation, "variables": {"t": "t"}, "extensions": apq(sha(mutation))}
    assert post(server.url, admin, body).json()["data"]
    refused = get(server.url, admin, {"extensions": json.dumps(apq(sha(mutation)))})
    assert refused.status_code in (400, 405), refused.text
    assert "data" not in refused.json() or not refused.json()["data"]


def test_stored_documents_are_bounded_least_recently_used_first(
    admin: Actor, bounded: ServerThread, loop: Loop, dsn: str
) -> None:
    queries = [viewer_query() for _ in range(3)]
    for query in queries:
        assert post(bounded.url, admin, {"query": query, "extensions": apq(sha(query))}).json()["data"][
            "viewer"
        ]
        time.sleep(0.01)  # distinct last-use times
    kept = stored(loop, dsn)
    assert set(kept) == {sha(queries[1]), sha(queries[2])}, kept  # the least recently used went

    # A document over THREADLINE_PERSISTED_DOCUMENT_MAX_BYTES runs but is not kept.
    long_query = "query Long_" + "x" * 220 + f"_{uuid.uuid4().hex[:6]} {{ viewer {{ id }} }}"
    response = post(bounded.url, admin, {"query": long_query, "extensions": apq(sha(long_query))})
    assert response.json()["data"]["viewer"]["id"] == admin.user_id
    assert sha(long_query) not in stored(loop, dsn)


# --- trusted documents ----------------------------------------------------------------------------


def apollo_manifest(tmp_path: Path, *queries: str) -> Path:
    path = tmp_path / "persisted-query-manifest.json"
    operations = [{"id": sha(q), "name": q.split()[1], "type": "query", "body": q} for q in queries]
    path.write_text(
        json.dumps({"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations})
    )
    return path


def test_trusted_mode_runs_only_registered_documents(
    admin: Actor, server: ServerThread, trusted: ServerThread, tmp_path: Path, loop: Loop, dsn: str
) -> None:
    query = viewer_query()
    # Unregistered: the text is refused, a hash or id is not found, and nothing is registered on the way.
    error = first_error(post(trusted.url, admin, {"query": query}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["reason"] == "untrustedDocument"
    assert (
        first_error(post(trusted.url, admin, {"extensions": apq(sha(query))}))["message"]
        == "PersistedQueryNotFound"
    )
    error = first_error(post(trusted.url, admin, {"query": query, "extensions": apq(sha(query))}))
    assert error["extensions"]["reason"] == "untrustedDocument"
    assert first_error(post(trusted.url, admin, {"documentId": f"sha256:{sha(query)}"}))["extensions"][
        "code"
    ] == ("PERSISTED_QUERY_NOT_FOUND")
    assert sha(query) not in stored(loop, dsn)

    # Automatically persisted (on a server not in trusted mode) is not trusted.
    assert post(server.url, admin, {"query": query, "extensions": apq(sha(query))}).json()["data"]
    assert stored(loop, dsn) == {sha(query): False}
    assert (
        first_error(post(trusted.url, admin, {"extensions": apq(sha(query))}))["message"]
        == "PersistedQueryNotFound"
    )

    # Registered from the client's manifest: by hash, by documentId (POST and GET), and as text.
    result = register(dsn, apollo_manifest(tmp_path, query))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pinned"] == [sha(query)]
    for body in (
        {"extensions": apq(sha(query))},
        {"documentId": sha(query)},
        {"documentId": f"sha256:{sha(query)}"},
        {"query": query},
    ):
        response = post(trusted.url, admin, body)
        assert response.json()["data"]["viewer"]["id"] == admin.user_id, (body, response.text)
    response = get(trusted.url, admin, {"documentId": sha(query)})
    assert response.json()["data"]["viewer"]["id"] == admin.user_id, response.text

    # Anything else is still refused.
    assert (
        first_error(post(trusted.url, admin, {"query": viewer_query()}))["extensions"]["reason"]
        == "untrustedDocument"
    )


def test_register_cli_reads_both_manifest_formats_and_is_idempotent(
    admin: Actor, trusted: ServerThread, tmp_path: Path, loop: Loop, dsn: str
) -> None:
    apollo_query, relay_query = viewer_query(), viewer_query()
    apollo = apollo_manifest(tmp_path, apollo_query)
    first = register(dsn, apollo)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "added": [sha(apollo_query)],
        "pinned": [],
        "unchanged": [],
        "conflicts": [],
        "invalid": [],
    }
    again = register(dsn, apollo)
    assert json.loads(again.stdout)["unchanged"] == [sha(apollo_query)]
    assert json.loads(again.stdout)["added"] == []

    # A plain {id: text} map (GraphQL Code Generator's persisted documents, Relay's persisted-queries.json):
    # ids need not be hashes of the text.
    plain = tmp_path / "persisted-documents.json"
    plain.write_text(json.dumps({"relay-viewer-1": relay_query}))
    result = register(dsn, plain)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == ["relay-viewer-1"]
    assert stored(loop, dsn) == {sha(apollo_query): True, "relay-viewer-1": True}
    response = post(trusted.url, admin, {"documentId": "relay-viewer-1"})
    assert response.json()["data"]["viewer"]["id"] == admin.user_id, response.text

    # An id registered with another text is a conflict (left alone); unparsable text is reported.
    plain.write_text(json.dumps({"relay-viewer-1": viewer_query(), "broken": "query {"}))
    result = register(dsn, plain)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["conflicts"] == ["relay-viewer-1"]
    assert [i["id"] for i in report["invalid"]] == ["broken"]
    assert (
        post(trusted.url, admin, {"documentId": "relay-viewer-1"}).json()["data"]["viewer"]["id"]
        == admin.user_id
    )

    # Not a manifest at all.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something-else", "version": 1, "operations": []}))
    assert register(dsn, bad).returncode == 2


def ws_result(client: WsClient, query: str) -> dict[str, Any]:
    """A query's result over graphql-transport-ws ({"data"} or {"errors"})."""
    op_id = client.subscribe(query, op_id=uuid.uuid4().hex[:8])
    result: dict[str, Any] = {}
    while True:
        message = client.receive(timeout=30)
        if message.get("id") != op_id:
            continue
        if message["type"] == "error":
            return {"errors": message["payload"]}
        if message["type"] == "next":
            result = message["payload"]
        elif message["type"] == "complete":
            return result


def test_trusted_mode_holds_on_websockets_too(
    admin: Actor, trusted: ServerThread, tmp_path: Path, dsn: str
) -> None:
    query = viewer_query()
    client = WsClient(trusted.ws_url, admin.api_key)
    try:
        refused = ws_result(client, query)
        assert refused["errors"][0]["extensions"]["reason"] == "untrustedDocument", refused
        assert register(dsn, apollo_manifest(tmp_path, query)).returncode == 0
        assert ws_result(client, query)["data"]["viewer"]["id"] == admin.user_id
    finally:
        client.close()


def test_a_bare_word_a_json_argument_reads_as_text_is_content_and_not_kept(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    """A JSON argument reads `{note: zqsecretwordxq}` as the string "zqsecretwordxq": caller content, as an inline
    string is, which deletes and erasure do not reach in the shared table. An enum value where an enum is expected
    stays plain."""
    root = start_thread(admin, create_conversation(admin), "noted")
    word = f"zq{uuid.uuid4().hex[:12]}"
    worded = f"mutation($i: ID!) {{ messageMetadataSet(id: $i, metadata: {{note: {word}}}) {{ id }} }}"
    plain = "mutation($m: ID!) { messageFeedbackSet(messageId: $m, rating: UP) { id } }"
    for query, variables in ((worded, {"i": root}), (plain, {"m": root})):
        response = post(
            server.url, admin, {"query": query, "variables": variables, "extensions": apq(sha(query))}
        )
        assert "errors" not in response.json(), response.json()  # each runs
    kept = stored(loop, dsn)
    assert sha(worded) not in kept
    assert sha(plain) in kept
