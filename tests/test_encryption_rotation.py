"""Encryption at rest (issue 20 item 1): `keys rotate --reencrypt` and `keys seal` reach every place a sealed value
lives (text columns, content parts, attachment entries, the event log, file chunks, file bytes in the directory
and S3 stores, cold documents), so the retired keys can be shredded and everything still reads back identical;
a rotation killed in the middle resumes. Through the CLI and the API, with SQL scans of every table."""

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
from pathlib import Path
from typing import Any

import asyncpg

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Client, Loop, create_admin, serve_process, unique
from tests.test_encryption import (
    EDIT,
    MESSAGE,
    PARTS_START,
    _no_key_left_behind,  # noqa: F401 - autouse: no data key outlives a test
    cli,
    marker,
    new_key,
    scan,
    sealed_server,
    sealed_threads,
    sql,
)
from tests.test_encryption_imports import REPORT, claude_file, download, upload
from tests.test_files import FakeS3
from tests.test_runs_support import create_run, wait_for
from tests.ws import CONVERSATION_EVENTS, WsClient
from threadline.crypto.rotation import CHECK, ROTATE_PLACES

TREE = """query($r: ID!) { threadTree(rootId: $r) { nodes { id content edits { content } chunks { content }
  parts { __typename ... on TextPart { text } ... on FilePart { name fileId } } } } }"""
CONVERSATION = "query($id: ID!) { conversation(id: $id) { title description } }"
ALLOWED = {"enrichment_job.result_tags"}
# The places the first test's writes leave sealed values in (as values_under names them).
SEALED_PLACES = {
    "message.content",
    "message.parts",
    "message_edit.content",
    "message_chunk.content",
    "message_attachment.data",
    "conversation.title",
    "stream_event.payload",
    "file_chunk.data",
    "conversation_tier.document (decompressed)",
    "file store",
}  # tags are stored plain (crypto/): suggested ones may carry a word


def s3_env(store: FakeS3) -> dict[str, str]:
    return {
        "THREADLINE_FILE_S3_ENDPOINT": f"http://127.0.0.1:{store.port}",
        "THREADLINE_FILE_S3_BUCKET": "bucket",
        "THREADLINE_FILE_S3_REGION": "eu-central-1",
        "THREADLINE_FILE_S3_ACCESS_KEY": "test-key",
        "THREADLINE_FILE_S3_SECRET_KEY": "test-secret",
    }


@contextmanager
def fake_s3() -> Iterator[FakeS3]:
    store = FakeS3()
    try:
        yield store
    finally:
        store.stop()


def as_actor(actor: Actor, url: str) -> Actor:
    """The same user calling another server."""
    return Actor(actor.tenant_id, actor.user_id, actor.api_key, Client(url, actor.api_key))


def exported(dsn: str, conversation: str, out: Path, **env: str) -> Any:
    done = cli(dsn, "export", "--conversation", conversation, "--out", str(out), **env)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    document["metadata"].pop("exported_at")
    return document


def replay(url: str, actor: Actor, conversation: str, cursor: str, count: int) -> list[dict[str, Any]]:
    """The conversation's first `count` events replayed from the log (`since` a cursor before them)."""
    ws = WsClient(url.replace("http", "ws") + "/graphql", actor.api_key)
    try:
        ws.subscribe(CONVERSATION_EVENTS, {"c": conversation, "s": cursor})
        return ws.events(count)
    finally:
        ws.close()


def key_marks(key_ids: list[uuid.UUID]) -> tuple[list[str], list[bytes]]:
    """How a value sealed with each key starts, as text (the sealed form's base64, whatever the nonce) and as
    bytes (a sealed file record or chunk)."""
    texts = ["tl1:" + base64.b64encode(bytes((1,)) + k.bytes).decode()[:20] for k in key_ids]
    raws = [b"\x1etlb1" + bytes((1,)) + k.bytes for k in key_ids]
    return texts, raws


def values_under(
    loop: Loop,
    dsn: str,
    key_ids: list[uuid.UUID],
    files: list[bytes] | None = None,
) -> list[str]:
    """Every place still holding a value sealed with one of these keys: table.column of any row (text, JSON and
    bytea columns of every table), inside any cold document (decompressed), or in any of `files` (a store's
    bytes)."""
    from threadline.tiers.document import decompress

    texts, raws = key_marks(key_ids)

    async def work() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            columns = await conn.fetch(
                """SELECT c.table_name, c.column_name, c.udt_name FROM information_schema.columns c
                   JOIN information_schema.tables t ON t.table_name = c.table_name AND t.table_schema = c.table_schema
                   WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                     AND c.udt_name IN ('text', 'varchar', 'json', 'jsonb', 'bytea', '_text')"""
            )
            found: list[str] = []
            for col in columns:
                table, name = col["table_name"], col["column_name"]
                if col["udt_name"] == "bytea":
                    query = f'SELECT count(*) FROM "{table}" t, unnest($1::bytea[]) m WHERE position(m in t."{name}") > 0'
                    marks: list[Any] = raws + [t.encode() for t in texts]
                else:
                    query = f'SELECT count(*) FROM "{table}" t, unnest($1::text[]) m WHERE strpos(t."{name}"::text, m) > 0'
                    marks = texts
                if await conn.fetchval(query, marks):
                    found.append(f"{table}.{name}")
            for doc in await conn.fetch(
                "SELECT document, codec FROM conversation_tier WHERE document IS NOT NULL"
            ):
                body = decompress(bytes(doc["document"]), doc["codec"])
                if any(t.encode() in body for t in texts) or any(r in body for r in raws):
                    found.append("conversation_tier.document (decompressed)")
            return found
        finally:
            await conn.close()

    found = loop.run(work())
    found.extend("file store" for data in files or () if any(r in data for r in raws))
    return found


def test_reencrypt_reseals_every_place_so_the_retired_keys_can_be_shredded_and_everything_reads_back(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    old, new = new_key(), new_key()
    word = marker()
    directory = tmp_path / "files"
    with fake_s3() as bucket:
        stores = {**s3_env(bucket), "THREADLINE_FILE_DIRECTORY": str(directory)}
        env_old = {"THREADLINE_MASTER_KEY": old, **stores}
        bodies = {
            storage: f"{storage} body {word} ".encode() * 50_000  # over a block of the stores (1 MiB)
            for storage in ("postgres", "directory", "s3")
        }
        files: dict[str, str] = {}
        with sealed_server(
            dsn, old, THREADLINE_ENCRYPT_TITLES="true", THREADLINE_FILE_STORAGE="directory", **stores
        ) as url:
            admin = create_admin(loop, dsn, url)
            cid = create_conversation(admin, f"about {word}", description=f"notes on {word}")
            cursor = admin.client.ok("{ streamCursor }")["streamCursor"]
            root = start_thread(admin, cid, f"root {word} text")
            answer = reply(admin, root, f"first draft {word}")
            admin.client.ok(EDIT, {"m": answer, "x": f"second draft {word}"})
            run = wait_for(admin, create_run(admin, root)["id"])
            assert run["status"] == "COMPLETED"
            created = upload(url, admin, bodies["directory"])
            assert created.status_code == 201, created.text
            files["directory"] = created.json()["id"]
            parts = {
                "content": f"see attached {word}",
                "parts": [
                    {"text": f"see attached {word}"},
                    {"file": {"name": "notes.txt", "fileId": files["directory"]}},
                ],
            }
            with_file = admin.client.ok(PARTS_START, {"c": cid, "i": parts})["threadStart"]["id"]
            imported = admin.client.ok(REPORT, {"i": {"format": "CLAUDE", "data": claude_file(word)}})[
                "conversationImportReport"
            ]["conversations"][0]["id"]
            # Another tenant's conversation goes cold (the tiers job freezes all of a tenant's at 0 days).
            other = create_admin(loop, dsn, url)
            cold_root = start_thread(other, create_conversation(other), f"cold words {word}")
            admin.client.close()
            other.client.close()
        for storage in ("s3", "postgres"):
            with sealed_server(dsn, old, THREADLINE_FILE_STORAGE=storage, **stores) as url:
                created = upload(url, admin, bodies[storage])
                assert created.status_code == 201, created.text
                files[storage] = created.json()["id"]
        frozen = cli(dsn, "tiers", "run", "--tenant", other.tenant_id, "--older-than-days", "0", **env_old)
        assert frozen.returncode == 0 and '"frozen": 1' in frozen.stdout, frozen.stdout + frozen.stderr
        assert sql(loop, dsn, "SELECT count(*) AS n FROM file_chunk")[0]["n"] >= 2

        def snapshot(url: str, events: int | None) -> dict[str, Any]:
            reader = as_actor(admin, url)
            try:
                got: dict[str, Any] = {
                    "conversation": reader.client.ok(CONVERSATION, {"id": cid})["conversation"],
                    "tree": reader.client.ok(TREE, {"r": root})["threadTree"]["nodes"],
                    "parts": reader.client.ok(TREE, {"r": with_file})["threadTree"]["nodes"],
                    "files": {s: download(url, admin, f).content for s, f in files.items()},
                }
            finally:
                reader.client.close()
            if events is not None:
                got["events"] = replay(url, admin, cid, cursor, events)
            return got

        with sealed_server(dsn, old, **stores) as url:
            before = snapshot(url, None)
            # The replay from the log: the thread, the reply, the edit, the run.
            before["events"] = replay(url, admin, cid, cursor, 4)
        assert before["conversation"] == {"title": f"about {word}", "description": f"notes on {word}"}
        assert {n["content"] for n in before["tree"]} == {
            f"root {word} text",
            f"second draft {word}",
            f"echo: root {word} text",
        }
        assert before["files"] == {s: bodies[s] for s in files}
        assert any(
            e["type"] == "thread.new" and e["thread"]["root"]["content"] == f"root {word} text"
            for e in before["events"]
        )
        export_before = exported(dsn, imported, tmp_path / "before.json", **env_old)
        assert f"hotels {word}" in json.dumps(export_before) and f"ex {word}" in json.dumps(export_before)

        old_keys = [r["id"] for r in sql(loop, dsn, "SELECT id FROM data_key")]

        def store_files() -> list[bytes]:
            return [p.read_bytes() for p in directory.rglob("*") if p.is_file()] + list(
                bucket.objects.values()
            )

        everywhere = set(values_under(loop, dsn, old_keys, store_files()))
        assert SEALED_PLACES <= everywhere

        env = {"THREADLINE_MASTER_KEY": new, "THREADLINE_MASTER_KEYS_PREVIOUS": old, **stores}
        refused = cli(dsn, "keys", "shred", "--retired", **env)  # no re-encryption yet: nothing to shred
        assert refused.returncode == 2 and "--reencrypt" in refused.stderr
        # Run where the directory store is not reachable, it stops at the first blob it cannot see (not "done",
        # which would let the retired keys go); the next run, with the stores' settings, resumes there.
        elsewhere = {**env, "THREADLINE_FILE_DIRECTORY": str(tmp_path / "elsewhere")}
        blind = cli(
            dsn,
            "keys",
            "rotate",
            "--reencrypt",
            "--batch",
            "3",
            THREADLINE_KEY_CACHE_SECONDS="0",
            **elsewhere,
        )
        assert blind.returncode == 1 and "is not in the directory store" in blind.stderr, blind.stderr[-2000:]
        assert "Traceback" not in blind.stderr
        rotated = cli(
            dsn, "keys", "rotate", "--reencrypt", "--batch", "3", THREADLINE_KEY_CACHE_SECONDS="0", **env
        )
        assert rotated.returncode == 0, rotated.stderr
        report = json.loads(rotated.stdout)
        assert report["finished"] is True
        assert {"cold", "conversation.description", "file_store"} | SEALED_PLACES - {
            "conversation_tier.document (decompressed)",
            "file store",
        } <= set(report["resealed"])
        assert report["resealed"]["file_store"] == 2  # the directory's file and the bucket's
        assert '"phase": "done"' in rotated.stderr  # progress lines

        assert values_under(loop, dsn, old_keys, store_files()) == []
        shredded = cli(dsn, "keys", "shred", "--retired", THREADLINE_MASTER_KEY=new)
        assert shredded.returncode == 0, shredded.stderr
        assert json.loads(shredded.stdout) == {"keysShredded": len(old_keys)}
        assert sql(
            loop,
            dsn,
            "SELECT count(*) AS n FROM data_key WHERE id = ANY($1::uuid[]) AND wrapped IS NULL",
            old_keys,
        )[0]["n"] == len(old_keys)
        assert set(scan(loop, dsn, word)) <= ALLOWED

        with sealed_server(dsn, new, **stores) as url:  # the new master key alone, the old data keys erased
            after = snapshot(url, len(before["events"]))
            assert after == before
            reader = as_actor(other, url)
            assert reader.client.ok(MESSAGE, {"id": cold_root})["node"]["content"] == f"cold words {word}"
            reader.client.close()
        assert (
            exported(dsn, imported, tmp_path / "after.json", THREADLINE_MASTER_KEY=new, **stores)
            == export_before
        )
        assert (
            sql(loop, dsn, "SELECT count(*) AS n FROM conversation_tier WHERE document IS NOT NULL")[0]["n"]
            == 0
        )


def test_a_rotation_killed_in_the_middle_resumes_where_it_stopped_while_the_server_keeps_writing(
    loop: Loop, dsn: str
) -> None:
    old, new = new_key(), new_key()
    word = marker()
    admin, cid, roots = sealed_threads(loop, dsn, old, word, 6)
    old_keys = [r["id"] for r in sql(loop, dsn, "SELECT id FROM data_key")]
    env = {
        "THREADLINE_MASTER_KEY": new,
        "THREADLINE_MASTER_KEYS_PREVIOUS": old,
        "THREADLINE_KEY_CACHE_SECONDS": "1",  # the servers' and the rotation's: it waits a second after retiring
    }
    # Online: a server with the new master key (and the old one, to unwrap what is not re-wrapped yet) serves
    # throughout.
    with sealed_server(
        dsn, new, THREADLINE_MASTER_KEYS_PREVIOUS=old, THREADLINE_KEY_CACHE_SECONDS="1"
    ) as url:
        writer = as_actor(admin, url)

        async def hold_last_message() -> tuple[asyncpg.Connection, Any]:
            conn = await asyncpg.connect(dsn)
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "SELECT 1 FROM message WHERE id = (SELECT id FROM message ORDER BY id DESC LIMIT 1) FOR UPDATE"
            )
            return conn, tx

        # The rotation re-seals messages one a batch, in id order, and waits on the last one's lock: killed there,
        # every batch before it committed, and the one waiting did not.
        conn, tx = loop.run(hold_last_message())
        proc = subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "keys", "rotate", "--reencrypt", "--batch", "1"],
            env={**os.environ, "DATABASE_URL": dsn, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                (state,) = sql(
                    loop,
                    dsn,
                    """SELECT phase, rows_done, (SELECT count(*) FROM pg_locks WHERE NOT granted) AS waiting
                       FROM key_rotation WHERE id = 'rotate'""",
                ) or [{"phase": None, "rows_done": 0, "waiting": 0}]
                if state["phase"] == "reseal" and state["rows_done"] >= 5 and state["waiting"] > 0:
                    break
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"the rotation did not reach the locked row: {state}"
                time.sleep(0.05)
            # Writes go on meanwhile, sealed with the new active keys.
            later = start_thread(writer, cid, f"written during the rotation {word}")
        finally:
            proc.kill()
            proc.communicate()
            loop.run(tx.rollback())
            loop.run(conn.close())
        (stopped,) = sql(loop, dsn, "SELECT phase, position, finished_at FROM key_rotation")
        assert stopped["phase"] == "reseal" and stopped["finished_at"] is None
        assert json.loads(stopped["position"])["counts"]["message.content"] == 5

        resumed = cli(dsn, "keys", "rotate", "--reencrypt", "--batch", "1", **env)
        assert resumed.returncode == 0, resumed.stderr
        report = json.loads(resumed.stdout)
        assert report["finished"] is True
        assert report["resealed"]["message.content"] == 6  # five before the kill, the locked one after
        # Resumed, not restarted: each owner has its old key (retired once) and one new active key.
        keys = sql(loop, dsn, "SELECT user_id, active FROM data_key WHERE shredded_at IS NULL")
        owners = {k["user_id"] for k in keys}
        assert sorted((k["user_id"] is None, k["active"]) for k in keys) == sorted(
            (owner is None, active) for owner in owners for active in (False, True)
        )
        assert values_under(loop, dsn, old_keys) == []
        shredded = cli(dsn, "keys", "shred", "--retired", THREADLINE_MASTER_KEY=new)
        assert shredded.returncode == 0 and json.loads(shredded.stdout) == {"keysShredded": len(old_keys)}
        for i, root in enumerate(roots):
            assert writer.client.ok(MESSAGE, {"id": root})["node"]["content"] == f"message {i} {word}"
        assert (
            writer.client.ok(MESSAGE, {"id": later})["node"]["content"]
            == f"written during the rotation {word}"
        )
        writer.client.close()


def test_keys_seal_seals_plain_file_bytes_in_every_store_and_plain_cold_documents(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    key = new_key()
    word = marker()
    directory = tmp_path / "files"
    bodies = {s: f"{s} plain body {word} ".encode() * 60_000 for s in ("postgres", "directory", "s3")}
    with fake_s3() as bucket:
        stores = {**s3_env(bucket), "THREADLINE_FILE_DIRECTORY": str(directory)}
        files: dict[str, str] = {}
        for storage in ("postgres", "directory", "s3"):  # no key: stored plain
            with serve_process(
                dsn, THREADLINE_RUN_QUEUE=unique("q"), THREADLINE_FILE_STORAGE=storage, **stores
            ) as url:
                if not files:
                    admin = create_admin(loop, dsn, url)
                    other = create_admin(loop, dsn, url)
                    cold_root = start_thread(other, create_conversation(other), f"cold plain {word}")
                    cold_reply = reply(other, cold_root, f"cold reply {word}")
                created = upload(url, admin, bodies[storage])
                assert created.status_code == 201, created.text
                files[storage] = created.json()["id"]
        admin.client.close()
        other.client.close()
        frozen = cli(dsn, "tiers", "run", "--tenant", other.tenant_id, "--older-than-days", "0", **stores)
        assert frozen.returncode == 0 and '"frozen": 1' in frozen.stdout, frozen.stdout + frozen.stderr

        def stored() -> list[bytes]:
            return [p.read_bytes() for p in directory.rglob("*") if p.is_file()] + list(
                bucket.objects.values()
            )

        def cold_text() -> bytes:
            from threadline.tiers.document import decompress

            (doc,) = sql(loop, dsn, "SELECT document, codec FROM conversation_tier")
            return decompress(bytes(doc["document"]), doc["codec"])

        assert all(word.encode() in data for data in stored()) and len(stored()) == 2
        assert "file_chunk.data" in scan(loop, dsn, word)
        assert word.encode() in cold_text()

        sealed = cli(dsn, "keys", "seal", "--batch", "2", THREADLINE_MASTER_KEY=key, **stores)
        assert sealed.returncode == 0, sealed.stderr
        report = json.loads(sealed.stdout)
        assert report["finished"] is True
        assert report["sealed"]["file_store"] == 2 and report["sealed"]["file_chunk.data"] >= 2
        assert report["sealed"]["cold"] >= 2  # the two messages' content (and their parts, if any)
        assert not any(word.encode() in data for data in stored())
        assert set(scan(loop, dsn, word)) <= ALLOWED
        assert word.encode() not in cold_text()
        again = cli(dsn, "keys", "seal", THREADLINE_MASTER_KEY=key, **stores)
        assert again.returncode == 0 and json.loads(again.stdout)["rowsSealed"] == 0, again.stdout

        with sealed_server(dsn, key, **stores) as url:
            for storage, file_id in files.items():
                assert download(url, admin, file_id).content == bodies[storage], storage
            reader = as_actor(other, url)
            assert reader.client.ok(MESSAGE, {"id": cold_reply})["node"]["content"] == f"cold reply {word}"
            assert reader.client.ok(MESSAGE, {"id": cold_root})["node"]["content"] == f"cold plain {word}"
            reader.client.close()
        assert set(scan(loop, dsn, word)) <= ALLOWED  # restored sealed


def test_values_written_late_under_a_retired_key_are_caught_by_check_walks_until_one_finds_none(
    loop: Loop, dsn: str
) -> None:
    """A writer that sealed with a key it held before the rotation's wait ended and commits late puts a value under
    a retired key behind the walk. Here two such late writes (the message's old sealed value put back): one after
    the first walk passed the messages, one after the first check walk passed them. The rotation walks again while
    a check walk finds any, so when it is done no value is under a retired key and shredding them loses nothing."""
    old, new = new_key(), new_key()
    admin, cid, roots = sealed_threads(loop, dsn, old, marker(), 3)
    old_keys = [r["id"] for r in sql(loop, dsn, "SELECT id FROM data_key")]
    (first, second) = [
        (r["id"], r["content"])
        for r in sql(loop, dsn, "SELECT id, content FROM message ORDER BY id LIMIT 2")  # sealed under `old`
    ]
    env = {
        "THREADLINE_MASTER_KEY": new,
        "THREADLINE_MASTER_KEYS_PREVIOUS": old,
        "THREADLINE_KEY_CACHE_SECONDS": "0",
    }
    walk, check = ROTATE_PLACES.index("message.content"), ROTATE_PLACES.index("message.content" + CHECK)

    def rotate_until(past: int) -> None:
        """A batch at a time until the rotation's position is past the place `past`."""
        for _ in range(200):
            done = cli(dsn, "keys", "rotate", "--reencrypt", "--batch", "1000", "--max-batches", "2", **env)
            assert done.returncode == 0, done.stderr
            (state,) = sql(loop, dsn, "SELECT phase, position FROM key_rotation")
            step = json.loads(state["position"] or "{}").get("step", -1)
            if state["phase"] == "reseal" and step > past:
                return
            assert state["phase"] != "done", "the rotation ended before the place"
        raise AssertionError("the rotation never passed the place")

    def write_late(message: tuple[Any, str]) -> None:
        sql(loop, dsn, "UPDATE message SET content = $2 WHERE id = $1", *message)

    rotate_until(walk)
    write_late(first)  # behind the first walk: the first check walk finds it
    rotate_until(check)
    write_late(second)  # behind the first check walk: only a second one finds it
    assert values_under(loop, dsn, old_keys) == ["message.content"]
    finished = cli(dsn, "keys", "rotate", "--reencrypt", "--batch", "1000", **env)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["finished"] is True
    assert report["resealed"]["message.content" + CHECK] == 2
    assert values_under(loop, dsn, old_keys) == []
    shredded = cli(dsn, "keys", "shred", "--retired", **env)
    assert shredded.returncode == 0, shredded.stderr
    with sealed_server(dsn, new) as url:
        reader = as_actor(admin, url)
        contents = [reader.client.ok(MESSAGE, {"id": root})["node"]["content"] for root in roots]
        reader.client.close()
    assert all(content.startswith("message ") for content in contents)
