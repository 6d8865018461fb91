"""Encryption at rest (issue 20 item 1), through the API of a `threadline serve` started with a master key, and
by scanning every row of every table with SQL."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Client, Loop, create_admin, serve_process, truncate_all, unique
from tests.test_runs_support import create_run, wait_for
from tests.ws import CONVERSATION_EVENTS, WsClient

UNAVAILABLE = "[unavailable: this content's key was erased]"
PREFIX = "\x1etl1:"
EDIT = "mutation($m: ID!, $x: String!) { messageEdit(id: $m, content: $x) { id content edits { content } } }"
SEARCH = """query($i: ConversationSearchInput!) { search(input: $i) {
  totalCount edges { node { snippet conversation { id } message { id content } } } } }"""
TREE = (
    "query($r: ID!) { threadTree(rootId: $r) { nodes { id content edits { content } chunks { content } } } }"
)
PARTS_START = """mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) {
  id parts { __typename ... on TextPart { text } ... on FilePart { name fileId } } } }"""
CONVERSATION = "query($id: ID!) { conversation(id: $id) { title description } }"
MESSAGE = "query($id: ID!) { node(id: $id) { ... on Message { id content isDeleted } } }"


@pytest.fixture(autouse=True)
def _no_key_left_behind(loop: Loop, dsn: str) -> Iterator[None]:
    """Data keys left in the shared database would stop the next module's server (started before its first
    test truncates) from starting without the master key: leave the database as plain as it was found."""
    yield
    loop.run(truncate_all(dsn))


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@contextmanager
def sealed_server(dsn: str, key: str, **env: str) -> Iterator[str]:
    # Its own run queue: no other test server's worker (without the key) takes its runs.
    with serve_process(dsn, THREADLINE_MASTER_KEY=key, THREADLINE_RUN_QUEUE=unique("q"), **env) as url:
        yield url


def cli(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": dsn, **env}
    return subprocess.run(
        [sys.executable, "-m", "threadline.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def admin_on(loop: Loop, dsn: str, url: str) -> Actor:
    return create_admin(loop, dsn, url)


def swap_key_id(value: str, key_id: uuid.UUID) -> str:
    """A sealed value naming another key (the same nonce and ciphertext)."""
    raw = bytearray(base64.b64decode(value[len(PREFIX) :]))
    raw[1:17] = key_id.bytes
    return PREFIX + base64.b64encode(bytes(raw)).decode()


def scan(loop: Loop, dsn: str, marker: str) -> list[str]:
    """Every table.column (text, varchar, json, jsonb, arrays, bytea: every column but tsvector and vector) of
    every table holding `marker` in some row."""

    async def work() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            columns = await conn.fetch(
                """SELECT c.table_name, c.column_name, c.data_type, c.udt_name FROM information_schema.columns c
                   JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_schema = c.table_schema
                   WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                     AND c.udt_name NOT IN ('tsvector', 'vector', 'halfvec', 'uuid', 'int4', 'int8', 'int2',
                                            'float4', 'float8', 'bool', 'timestamptz', 'timestamp', 'numeric')"""
            )
            found: list[str] = []
            for col in columns:
                table, name = col["table_name"], col["column_name"]
                if col["udt_name"] == "bytea":
                    sql = f'SELECT count(*) FROM "{table}" WHERE position(convert_to($1, \'UTF8\') in "{name}") > 0'
                else:
                    sql = f"SELECT count(*) FROM \"{table}\" WHERE \"{name}\"::text ILIKE '%' || $1 || '%'"
                if await conn.fetchval(sql, marker):
                    found.append(f"{table}.{name}")
            return found
        finally:
            await conn.close()

    return loop.run(work())


def sql(loop: Loop, dsn: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    async def work() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(statement, *args)
        finally:
            await conn.close()

    return loop.run(work())


def marker() -> str:
    return "zqmarker" + uuid.uuid4().hex[:10]


def test_with_encryption_on_no_plaintext_marker_is_stored_anywhere_and_the_api_reads_it_back(
    loop: Loop, dsn: str
) -> None:
    word = marker()
    with sealed_server(dsn, new_key(), THREADLINE_ENCRYPT_TITLES="true") as url:
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin, f"about {word}", description=f"notes on {word}")
        cursor = admin.client.ok("{ streamCursor }")["streamCursor"]
        root = start_thread(admin, cid, f"root {word} text")
        answer = reply(admin, root, f"first draft {word}")
        edited = admin.client.ok(EDIT, {"m": answer, "x": f"second draft {word}"})["messageEdit"]
        assert edited["content"] == f"second draft {word}"
        assert edited["edits"] == [{"content": f"first draft {word}"}]
        run = wait_for(admin, create_run(admin, root)["id"])
        assert run["status"] == "COMPLETED"
        assert run["output"]["content"] == f"echo: root {word} text"
        assert "".join(c["content"] for c in run["output"]["chunks"]) == f"echo: root {word} text"

        tree = admin.client.ok(TREE, {"r": root})["threadTree"]["nodes"]
        contents = sorted(n["content"] for n in tree)
        assert contents == sorted([f"root {word} text", f"second draft {word}", f"echo: root {word} text"])

        # An attachment's bytes and a message's content parts (text, tool arguments) are sealed too.
        uploaded = httpx.post(
            f"{url}/files",
            files={"file": ("notes.txt", f"file body {word}".encode(), "text/plain")},
            headers={"Authorization": f"Bearer {admin.api_key}"},
            timeout=60,
        )
        assert uploaded.status_code == 201, uploaded.text
        file_id = uploaded.json()["id"]
        parts = {
            "content": f"see attached {word}",
            "parts": [{"text": f"see attached {word}"}, {"file": {"name": "notes.txt", "fileId": file_id}}],
        }
        attached = admin.client.ok(PARTS_START, {"c": cid, "i": parts})["threadStart"]
        assert attached["parts"][0] == {"__typename": "TextPart", "text": f"see attached {word}"}
        got = httpx.get(
            f"{url}/files/{file_id}", headers={"Authorization": f"Bearer {admin.api_key}"}, timeout=60
        )
        assert got.status_code == 200 and got.content == f"file body {word}".encode()

        # The event log replays the text (a subscription from a cursor before it was written).
        ws = WsClient(url.replace("http", "ws") + "/graphql", admin.api_key)
        ws.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": cursor})
        roots = [e["thread"]["root"]["content"] for e in ws.events(3) if e["type"] == "thread.new"]
        assert roots[:1] == [f"root {word} text"]
        ws.close()

        title = admin.client.ok(CONVERSATION, {"id": cid})["conversation"]
        assert title == {"title": f"about {word}", "description": f"notes on {word}"}
        # Tags are stored plain (crypto/ lists what stays readable): the tags the enrichment worker suggests
        # from the content are the one place the marker may be.
        assert set(scan(loop, dsn, word)) <= {"enrichment_job.result_tags"}
        # Sealed, not emptied: the content columns hold the envelopes.
        sealed = sql(
            loop, dsn, "SELECT count(*) AS n FROM message WHERE left(content, 5) = chr(30) || 'tl1:'"
        )
        assert sealed[0]["n"] == 4
        admin.client.close()


def test_keyword_search_finds_sealed_content_and_its_snippet_is_made_from_the_plaintext(
    loop: Loop, dsn: str
) -> None:
    word = marker()
    with sealed_server(dsn, new_key(), THREADLINE_ENCRYPT_TITLES="true") as url:
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin, "talk")
        mid = start_thread(admin, cid, f"the deploy failed with {word} again")
        titled = create_conversation(admin, "kubernetesque outage review")
        (hit,) = admin.client.ok(SEARCH, {"i": {"query": "kubernetesque"}})["search"]["edges"]
        assert hit["node"]["conversation"]["id"] == titled
        assert "<mark>kubernetesque</mark>" in hit["node"]["snippet"]
        found = admin.client.ok(SEARCH, {"i": {"query": word}})["search"]
        assert found["totalCount"] == 1
        (edge,) = found["edges"]
        assert edge["node"]["conversation"]["id"] == cid
        assert edge["node"]["message"] == {"id": mid, "content": f"the deploy failed with {word} again"}
        assert f"<mark>{word}</mark>" in edge["node"]["snippet"]
        # An edit indexes the new text, not the old.
        admin.client.ok(EDIT, {"m": mid, "x": "nothing to see"})
        assert admin.client.ok(SEARCH, {"i": {"query": word}})["search"]["totalCount"] == 0
        assert admin.client.ok(SEARCH, {"i": {"query": "nothing"}})["search"]["totalCount"] == 1
        assert set(scan(loop, dsn, word)) <= {"enrichment_job.result_tags"}
        assert scan(loop, dsn, "kubernetesque") == []
        admin.client.close()


def test_a_server_without_the_key_or_with_another_key_refuses_to_start(loop: Loop, dsn: str) -> None:
    key = new_key()
    with sealed_server(dsn, key) as url:
        admin = admin_on(loop, dsn, url)
        start_thread(admin, create_conversation(admin), "sealed text")
        admin.client.close()
    for env in ({}, {"THREADLINE_MASTER_KEY": new_key()}):
        done = cli(
            dsn, "serve", "--port", "0", THREADLINE_MIGRATE_ON_START="false", THREADLINE_WORKERS="1", **env
        )
        assert done.returncode != 0
        assert "master key" in done.stderr


def sealed_threads(loop: Loop, dsn: str, key: str, word: str, count: int) -> tuple[Actor, str, list[str]]:
    """`count` threads "message {i} {word}" in a new tenant's conversation, written by a server with `key` (which
    is stopped again): the admin (its client closed), the conversation and the roots."""
    with sealed_server(dsn, key) as url:
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin)
        roots = [start_thread(admin, cid, f"message {i} {word}") for i in range(count)]
        admin.client.close()
    return admin, cid, roots


def test_rotation_rewraps_and_reencrypts_resumably_and_the_new_key_reads_old_rows(
    loop: Loop, dsn: str
) -> None:
    old, new = new_key(), new_key()
    word = marker()
    admin, _, roots = sealed_threads(loop, dsn, old, word, 5)
    before = {r["content"] for r in sql(loop, dsn, "SELECT content FROM message")}
    (count,) = sql(
        loop,
        dsn,
        """SELECT (SELECT count(*) FROM message WHERE left(content, 5) = chr(30) || 'tl1:')
                + (SELECT count(*) FROM enrichment_job WHERE left(result_text, 5) = chr(30) || 'tl1:') AS n""",
    )
    assert count["n"] >= 5

    # Whose keys exist depends on what sealed something already (the tenant's: a generated title, if its job ran).
    owners = {k["user_id"] is None for k in sql(loop, dsn, "SELECT user_id FROM data_key")}
    assert False in owners  # the user's key sealed their messages

    env = {"THREADLINE_MASTER_KEY": new, "THREADLINE_MASTER_KEYS_PREVIOUS": old}
    partial = cli(dsn, "keys", "rotate", "--reencrypt", "--batch", "2", "--max-batches", "1", **env)
    assert partial.returncode == 0, partial.stderr
    assert '"finished": false' in partial.stdout
    done = cli(dsn, "keys", "rotate", "--reencrypt", "--batch", "2", **env)
    assert done.returncode == 0, done.stderr
    assert '"finished": true' in done.stdout
    resealed = json.loads(done.stdout)["resealed"]  # by place: the event log's snapshots too
    assert resealed["message.content"] + resealed.get("enrichment_job.result_text", 0) == count["n"]

    after = {r["content"] for r in sql(loop, dsn, "SELECT content FROM message")}
    assert after.isdisjoint(before)  # every value sealed again
    # Each owner (the tenant, the user) has its retired key and a new active one, all under the new master key.
    keys = sql(loop, dsn, "SELECT user_id, active, master_key_id FROM data_key ORDER BY created_at")
    assert sorted((k["user_id"] is None, k["active"]) for k in keys) == sorted(
        (owner, active) for owner in owners for active in (False, True)
    )
    assert len({k["master_key_id"] for k in keys}) == 1

    with sealed_server(dsn, new) as url:  # only the new master key now
        reader = Actor(admin.tenant_id, admin.user_id, admin.api_key, Client(url, admin.api_key))
        for i, root in enumerate(roots):
            assert reader.client.ok(MESSAGE, {"id": root})["node"]["content"] == f"message {i} {word}"
        reader.client.close()
    assert set(scan(loop, dsn, word)) <= {"enrichment_job.result_tags"}  # tags are plain (see the first test)


def test_shredding_a_user_key_makes_their_content_unavailable_and_leaves_others_readable(
    loop: Loop, dsn: str
) -> None:
    with sealed_server(dsn, (key := new_key()), THREADLINE_KEY_CACHE_SECONDS="0") as url:
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin)
        own = start_thread(admin, cid, "the admin's words")
        users = sql(loop, dsn, "SELECT DISTINCT user_id FROM data_key WHERE user_id IS NOT NULL")
        assert len(users) == 1
        shred = cli(dsn, "keys", "shred", "--user", str(users[0]["user_id"]), THREADLINE_MASTER_KEY=key)
        assert shred.returncode == 0, shred.stderr
        assert '"keysShredded": 1' in shred.stdout
        body = admin.client.raw(MESSAGE, {"id": own})
        assert "errors" not in body
        assert body["data"]["node"]["content"] == UNAVAILABLE
        tree = admin.client.ok(TREE, {"r": own})["threadTree"]["nodes"]
        assert [n["content"] for n in tree] == [UNAVAILABLE]
        # New content of the tenant still writes and reads (a new key for the user).
        other = start_thread(admin, cid, "written after the shred")
        assert admin.client.ok(MESSAGE, {"id": other})["node"]["content"] == "written after the shred"
        admin.client.close()


def test_a_tenant_key_opens_only_its_own_values(loop: Loop, dsn: str) -> None:
    """A value names its key, and the key's tenant is in the value's associated data: tenant A's value with its
    key id swapped for tenant B's key does not open (B's key never decrypts A's rows), nor does a value with
    another tenant's id bound into it."""
    with sealed_server(dsn, new_key(), THREADLINE_KEY_CACHE_SECONDS="0") as url:
        a = admin_on(loop, dsn, url)
        b = admin_on(loop, dsn, url)
        a_msg = start_thread(a, create_conversation(a), "tenant a's secret")
        b_msg = start_thread(b, create_conversation(b), "tenant b's secret")
        rows = sql(
            loop, dsn, "SELECT m.id, m.content, m.tenant_id, m.author_id FROM message m ORDER BY m.created_at"
        )
        a_row, b_row = rows
        b_key = sql(loop, dsn, "SELECT id FROM data_key WHERE tenant_id = $1", b_row["tenant_id"])[0]["id"]
        sql(loop, dsn, "UPDATE message SET content = $2 WHERE id = $1", a_row["id"],
            swap_key_id(a_row["content"], b_key))  # fmt: skip
        assert a.client.ok(MESSAGE, {"id": a_msg})["node"]["content"] == UNAVAILABLE
        assert b.client.ok(MESSAGE, {"id": b_msg})["node"]["content"] == "tenant b's secret"
        a.client.close()
        b.client.close()


@pytest.mark.parametrize("setting", ["off"])
def test_encryption_off_with_a_key_reads_sealed_content_and_stores_new_content_plain(
    loop: Loop, dsn: str, setting: str
) -> None:
    key = new_key()
    with sealed_server(dsn, key) as url:
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin)
        sealed = start_thread(admin, cid, "sealed before")
        admin.client.close()
    with sealed_server(dsn, key, THREADLINE_ENCRYPTION=setting) as url:
        reader = Actor(admin.tenant_id, admin.user_id, admin.api_key, Client(url, admin.api_key))
        assert reader.client.ok(MESSAGE, {"id": sealed})["node"]["content"] == "sealed before"
        start_thread(reader, cid, "plain after")
        reader.client.close()
    assert [
        r["content"] for r in sql(loop, dsn, "SELECT content FROM message WHERE content = 'plain after'")
    ] == ["plain after"]


def test_user_erase_shreds_the_users_key_and_the_members_own_content_goes_with_it(
    loop: Loop, dsn: str
) -> None:
    from tests.api import join

    with sealed_server(dsn, new_key()) as url:
        admin = admin_on(loop, dsn, url)
        user = admin.client.ok(
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": f"{unique('u')}@example.com", "role": "MEMBER"}},
        )["userCreate"]["id"]
        secret = admin.client.ok(
            'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "t") { secret } }', {"u": user}
        )["apiKeyCreate"]["secret"]
        member = Actor(admin.tenant_id, user, secret, Client(url, secret))
        cid = create_conversation(admin)
        join(admin, member, cid)
        root = start_thread(admin, cid, "the admin asks")
        reply(member, root, "the member answers")
        member.client.close()
        (key,) = sql(loop, dsn, "SELECT id FROM data_key WHERE user_id IS NOT NULL AND user_id <> $1",
                     uuid.UUID(hex=admin.user_id[4:]))  # fmt: skip
        admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { __typename } }", {"u": user})
        (row,) = sql(loop, dsn, "SELECT wrapped, shredded_at FROM data_key WHERE id = $1", key["id"])
        assert row["wrapped"] is None and row["shredded_at"] is not None
        tree = admin.client.ok(TREE, {"r": root})["threadTree"]["nodes"]
        assert [n["content"] for n in tree] == ["the admin asks", ""]  # redacted, and its key erased
        admin.client.close()


def test_semantic_search_finds_sealed_content_by_meaning(loop: Loop, dsn: str) -> None:
    """The indexer embeds the plaintext (the pool opens it); vectors are stored as they are (they leak approximate
    meaning: crypto/ says so), chunks' text is not stored in the clear."""
    env = {
        "THREADLINE_EMBEDDINGS": "test",
        "THREADLINE_EMBEDDINGS_SETTLE_SECONDS": "0",
        "THREADLINE_EMBEDDINGS_POLL_SECONDS": "0.05",
        "THREADLINE_EMBEDDINGS_RATE": "0",
    }
    index = "{ embeddingIndex { pending inProgress indexedMessages } }"
    query = """query($i: ConversationSearchInput!) { search(input: $i) {
      totalCount nodes { message { id content } matchedBy snippet } } }"""
    with sealed_server(dsn, new_key(), **env) as url:
        admin = admin_on(loop, dsn, url)
        target = start_thread(
            admin, create_conversation(admin), "How do I repair a broken automobile on a budget"
        )
        start_thread(admin, create_conversation(admin), "Sourdough starter needs flour every morning")
        deadline = time.monotonic() + 30
        while (status := admin.client.ok(index)["embeddingIndex"])["indexedMessages"] < 2:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        found = admin.client.ok(query, {"i": {"query": "fix damaged car inexpensive", "mode": "SEMANTIC"}})[
            "search"
        ]
        assert found["totalCount"] == 1
        (hit,) = found["nodes"]
        assert hit["message"] == {"id": target, "content": "How do I repair a broken automobile on a budget"}
        assert hit["snippet"].startswith("How do I repair a broken automobile")
        assert scan(loop, dsn, "automobile") == []
        admin.client.close()


def test_a_sealed_conversation_goes_cold_stays_sealed_and_comes_back_searchable(loop: Loop, dsn: str) -> None:
    key = new_key()
    word = marker()
    with sealed_server(dsn, key) as url:
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin)
        root = start_thread(admin, cid, f"cold words {word}")
        ran = cli(
            dsn,
            "tiers",
            "run",
            "--tenant",
            admin.tenant_id,
            "--older-than-days",
            "0",
            THREADLINE_MASTER_KEY=key,
        )
        assert ran.returncode == 0, ran.stderr
        assert '"frozen": 1' in ran.stdout
        assert sql(loop, dsn, "SELECT count(*) AS n FROM message")[0]["n"] == 0  # in the cold document now
        # The document holds the sealed values as the rows had them: no plaintext in it either.
        (doc,) = sql(loop, dsn, "SELECT document, codec FROM conversation_tier")
        from threadline.tiers.document import decompress

        assert word.encode() not in decompress(bytes(doc["document"]), doc["codec"])
        # A read brings it back; the restored sealed row gets its full-text vector from the plaintext.
        assert admin.client.ok(MESSAGE, {"id": root})["node"]["content"] == f"cold words {word}"
        assert admin.client.ok(SEARCH, {"i": {"query": word}})["search"]["totalCount"] == 1
        assert set(scan(loop, dsn, word)) <= {"enrichment_job.result_tags"}
        admin.client.close()


def test_keys_seal_encrypts_content_written_before_encryption_was_on_resumably(loop: Loop, dsn: str) -> None:
    key = new_key()
    word = marker()
    with serve_process(dsn, THREADLINE_RUN_QUEUE=unique("q")) as url:  # no key: content stored plain
        admin = admin_on(loop, dsn, url)
        cid = create_conversation(admin, "before")
        roots = [start_thread(admin, cid, f"plain {i} {word}") for i in range(3)]
        admin.client.ok(EDIT, {"m": roots[0], "x": f"plain edited {word}"})
        admin.client.close()
    assert "message.content" in scan(loop, dsn, word)

    # (The first batch finds no cold document, the next two seal a message each.)
    partial = cli(dsn, "keys", "seal", "--batch", "1", "--max-batches", "3", THREADLINE_MASTER_KEY=key)
    assert partial.returncode == 0, partial.stderr
    assert '"finished": false' in partial.stdout and '"rowsSealed": 2' in partial.stdout
    done = cli(dsn, "keys", "seal", "--batch", "2", THREADLINE_MASTER_KEY=key)
    assert done.returncode == 0, done.stderr
    assert '"finished": true' in done.stdout
    assert set(scan(loop, dsn, word)) <= {"enrichment_job.result_tags"}

    with sealed_server(dsn, key) as url:
        reader = Actor(admin.tenant_id, admin.user_id, admin.api_key, Client(url, admin.api_key))
        assert reader.client.ok(MESSAGE, {"id": roots[1]})["node"]["content"] == f"plain 1 {word}"
        tree = reader.client.ok(TREE, {"r": roots[0]})["threadTree"]["nodes"]
        assert tree[0]["content"] == f"plain edited {word}" and tree[0]["edits"] == [
            {"content": f"plain 0 {word}"}
        ]
        assert reader.client.ok(SEARCH, {"i": {"query": word}})["search"]["totalCount"] == 1
        reader.client.close()


def test_a_forgotten_key_leaves_no_opened_text_in_the_process() -> None:
    """Crypto-shredding reaches memory too: the plaintext cache drops what a forgotten key opened."""
    import time
    import uuid
    from typing import cast

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from threadline.crypto import envelope
    from threadline.crypto.keyring import DataKey, Keyring

    ring = Keyring(cast(Any, None), plaintext_cache_bytes=1 << 20)
    tenant = uuid.uuid4()
    keys = [
        DataKey(uuid.uuid4(), tenant, uuid.uuid4(), AESGCM(os.urandom(32)), time.monotonic())
        for _ in range(2)
    ]
    for key in keys:
        ring._keys[key.id] = key
        ring._by_raw[key.id.bytes] = key
    assert key.cipher is not None
    sealed = [
        envelope.seal(cast(AESGCM, k.cipher), k.id, tenant, f"secret of {i}") for i, k in enumerate(keys)
    ]
    assert [ring.open_text(s) for s in sealed] == ["secret of 0", "secret of 1"]
    assert {text for _, text in ring._plain.values()} == {"secret of 0", "secret of 1"}
    ring.forget([keys[0].id])
    assert {text for _, text in ring._plain.values()} == {"secret of 1"}
    assert ring._plain_bytes == sum(len(v) + len(t) + 200 for v, (_, t) in ring._plain.items())


def test_a_worker_without_the_key_takes_no_job_of_a_sealed_tenant(loop: Loop, dsn: str) -> None:
    """A process started without the master key (before encryption was turned on, say) would read sealed text as it
    is stored: a title made of ciphertext and stored plain, vectors of ciphertext, a run sent the sealed history.
    Its workers take no enrichment job, embedding or run of a tenant with data keys; a worker with the key does."""
    from threadline.embeddings import repository as embeddings_repo
    from threadline.enrich import repository as enrich_repo
    from threadline.runs import repository as runs_repo

    admin, cid, _ = sealed_threads(loop, dsn, new_key(), marker(), 2)
    tenant = sql(loop, dsn, "SELECT tenant_id FROM conversation")[0]["tenant_id"]
    # What the server with the key had not done yet when it stopped (or anything it did): queued again.
    sql(loop, dsn, "UPDATE enrichment_job SET status = 'QUEUED', run_after = now() - interval '1 minute'")
    sql(
        loop, dsn, "UPDATE embedding_queue SET enqueued_at = now() - interval '1 minute', leased_until = NULL"
    )
    run_id = uuid.uuid4()
    sql(
        loop,
        dsn,
        """INSERT INTO run (id, tenant_id, conversation_id, message_id, root_id, status, queue, provider, model,
                            created_at, updated_at)
           SELECT $1, tenant_id, conversation_id, id, id, 'QUEUED', 'keyless-test', 'echo', 'echo', now(), now()
           FROM message WHERE parent_id IS NULL LIMIT 1""",
        run_id,
    )

    async def claims(keyless: bool) -> tuple[Any, list[Any], Any]:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():  # look, then roll back: nothing is taken
                job = await enrich_repo.claim_next(conn, "w", 30.0, keyless=keyless)
                messages = await embeddings_repo.claim(conn, "w", 10, 30.0, 0.0, 5, keyless=keyless)
                run = await runs_repo.claim_next(conn, "keyless-test", "w", keyless=keyless)
                raise _RollBack((job, messages, run))
        except _RollBack as taken:
            return taken.args[0]  # type: ignore[no-any-return]
        finally:
            await conn.close()

    job, messages, run = loop.run(claims(keyless=True))
    assert job is None and messages == [] and run is None
    job, messages, run = loop.run(claims(keyless=False))
    assert job is not None and job["tenant_id"] == tenant
    assert messages and {m["tenant_id"] for m in messages} == {tenant}
    assert run is not None and run["id"] == run_id


class _RollBack(Exception):
    pass
