"""Encryption at rest (issue 20 item 1): imports seal what they store, merges compare plaintext, the worker and the
import command refuse a sealed database without its key, file bytes are sealed in every store, and a deleted
message's opened text leaves the process's cache. Through the CLI and the API, with SQL scans of every table."""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import (
    Actor,
    Client,
    Loop,
    ServerThread,
    create_admin,
    serve_process,
    test_settings,
    unique,
)
from tests.test_encryption import (
    EDIT,
    MESSAGE,
    SEARCH,
    _no_key_left_behind,  # noqa: F401 - autouse: no data key outlives a test
    cli,
    marker,
    new_key,
    scan,
    sealed_server,
    sql,
)
from tests.test_files import FakeS3
from tests.test_porting_import import fixture

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported skipped merged messageCount messagesAdded messagesUpdated failures { message }
  conversations { id title } } }"""
ALLOWED = {"enrichment_job.result_tags"}  # tags are stored plain (crypto/): suggested ones may carry a word


def chatgpt_file(word: str) -> list[dict[str, Any]]:
    """The merge fixture's first ChatGPT export with `word` in its title, a question, and an odd content part
    (kept as an attachment entry)."""
    data = copy.deepcopy(fixture("merge/chatgpt-v1.json"))
    conversation = data[0]
    conversation["title"] = f"Capitals {word}"
    mapping = conversation["mapping"]
    mapping["u-1"]["message"]["content"]["parts"] = [
        f"What is the capital of {word}?",
        {"content_type": "widget_state", "note": f"widget said {word}"},
    ]
    return [conversation]


def claude_file(word: str, uuid_: str | None = None) -> list[dict[str, Any]]:
    """The merge fixture's first Claude export with `word` in a message, a tool call's arguments and an
    attachment's extracted text."""
    data = copy.deepcopy(fixture("merge/claude-v1.json"))
    conversation = data[0]
    if uuid_ is not None:
        conversation["uuid"] = uuid_
    first = conversation["chat_messages"][0]
    first["text"] = f"Plan a weekend near {word}"
    first["content"] = [
        {"type": "text", "text": f"Plan a weekend near {word}"},
        {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": f"hotels {word}"}},
    ]
    first["attachments"] = [
        {
            "file_name": "notes.txt",
            "file_type": "text/plain",
            "file_size": 20,
            "extracted_content": f"ex {word}",
        }
    ]
    return [conversation]


def assert_sealed_everywhere(loop: Loop, dsn: str, *words: str) -> None:
    for word in words:
        assert set(scan(loop, dsn, word)) <= ALLOWED, word


def test_imports_through_the_cli_and_the_api_store_no_plaintext_and_search_finds_them(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    key = new_key()
    by_cli, by_api, into = marker(), marker(), marker()
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(chatgpt_file(by_cli)))
    with sealed_server(dsn, key, THREADLINE_ENCRYPT_TITLES="true") as url:
        admin = create_admin(loop, dsn, url)
        done = cli(
            dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet",
            THREADLINE_MASTER_KEY=key, THREADLINE_ENCRYPT_TITLES="true",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1])["imported"] == 1
        api = admin.client.ok(REPORT, {"i": {"format": "CLAUDE", "data": claude_file(by_api)}})[
            "conversationImportReport"
        ]
        assert api["imported"] == 1 and api["failures"] == []
        # Into an existing conversation: its new threads are announced (thread.new in the event log).
        target = create_conversation(admin, "live one")
        other = str(uuid.uuid4())
        merged = admin.client.ok(
            REPORT, {"i": {"format": "CLAUDE", "data": claude_file(into, other), "conversationId": target}}
        )["conversationImportReport"]
        assert merged["failures"] == [] and merged["messageCount"] == 3
        (logged,) = sql(
            loop,
            dsn,
            "SELECT count(*) AS n FROM stream_event WHERE type = 'thread.new' AND payload::text LIKE '%tl1:%'",
        )
        assert logged["n"] >= 1  # the snapshot's text is in the log, sealed

        assert_sealed_everywhere(loop, dsn, by_cli, by_api, into)
        # Stored sealed, read back plain; search finds every one of them (vectors built from the plaintext).
        (sealed,) = sql(
            loop, dsn, "SELECT count(*) AS n FROM message WHERE left(content, 5) = chr(30) || 'tl1:'"
        )
        (stored,) = sql(loop, dsn, "SELECT count(*) AS n FROM message WHERE content <> ''")
        assert sealed["n"] == stored["n"] >= 9
        expected = {
            by_cli: "What is the capital of ",
            by_api: "Plan a weekend near ",
            into: "Plan a weekend near ",
        }
        for word, start in expected.items():
            found = admin.client.ok(SEARCH, {"i": {"query": word}})["search"]
            contents = [e["node"]["message"]["content"] for e in found["edges"] if e["node"]["message"]]
            assert any(c.startswith(start + word) for c in contents), (word, found)
        titles = {c["title"] for c in admin.client.ok("{ conversations(first: 10) { nodes { title } } }")[
            "conversations"]["nodes"]}  # fmt: skip
        assert f"Capitals {by_cli}" in titles
        # Tool arguments and the attachment entry come back opened in an export.
        (conversation,) = api["conversations"]
        out = tmp_path / "export.json"
        exported = cli(dsn, "export", "--conversation", conversation["id"], "--out", str(out),
                       THREADLINE_MASTER_KEY=key)  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        document = out.read_text()
        assert f"hotels {by_api}" in document and f"ex {by_api}" in document
        admin.client.close()


def test_a_reimport_of_an_unchanged_export_under_encryption_changes_nothing(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    key = new_key()
    with sealed_server(dsn, key) as url:
        admin = create_admin(loop, dsn, url)

        def report(fmt: str, data: Any) -> dict[str, Any]:
            result: dict[str, Any] = admin.client.ok(REPORT, {"i": {"format": fmt, "data": data}})[
                "conversationImportReport"
            ]
            return result

        first = report("CLAUDE", fixture("merge/claude-v1.json"))
        assert first["imported"] == 1
        again = report("CLAUDE", fixture("merge/claude-v1.json"))
        assert (again["imported"], again["merged"], again["skipped"], again["messagesUpdated"]) == (
            0,
            0,
            1,
            0,
        )
        # ChatGPT through the API (the stored rows compared): v1, then v2 changes one answer and adds six.
        report("CHATGPT", fixture("merge/chatgpt-v1.json"))
        grown = report("CHATGPT", fixture("merge/chatgpt-v2.json"))
        assert (grown["merged"], grown["messagesAdded"], grown["messagesUpdated"]) == (1, 6, 1)
        assert report("CHATGPT", fixture("merge/chatgpt-v2.json"))["skipped"] == 1
        (edits,) = sql(loop, dsn, "SELECT count(*) AS n FROM message_edit")
        assert edits["n"] == 1  # the one answer that changed, nothing else
        # The CLI reads a grown ChatGPT export's known rows by source id (another statement): the same answer.
        v1, v2 = tmp_path / "v1.json", tmp_path / "v2.json"
        other = str(uuid.uuid4())
        for path, name in ((v1, "merge/chatgpt-v1.json"), (v2, "merge/chatgpt-v2.json")):
            data = fixture(name)
            data[0]["id"] = data[0]["conversation_id"] = other
            path.write_text(json.dumps(data))
        for path, expected in ((v1, ("imported", 1)), (v2, ("messagesUpdated", 1))):
            done = cli(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet",
                       THREADLINE_MASTER_KEY=key)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout.strip().splitlines()[-1])[expected[0]] == expected[1], done.stdout
        (edits,) = sql(loop, dsn, "SELECT count(*) AS n FROM message_edit")
        assert edits["n"] == 2
        admin.client.close()


def test_the_worker_and_the_import_command_refuse_a_sealed_database_without_its_key(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    key = new_key()
    with sealed_server(dsn, key) as url:
        admin = create_admin(loop, dsn, url)
        start_thread(admin, create_conversation(admin), "sealed text")
        admin.client.close()
    for env in ({}, {"THREADLINE_MASTER_KEY": new_key()}):
        done = cli(dsn, "worker", THREADLINE_MIGRATE_ON_START="false", **env)
        assert done.returncode != 0
        assert "master key" in done.stderr and "threadline worker" in done.stderr
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(claude_file("refused")))
    refused = cli(dsn, "import", str(path), "--format", "claude", "--api-key", admin.api_key, "--quiet")
    assert refused.returncode != 0 and "master key" in refused.stderr
    assert scan(loop, dsn, "refused") == []  # nothing of it stored in the clear
    # The other commands that read or write content refuse the same way: an export would write ciphertext as
    # the text, a PII backfill or a cold-tier pass would write plain text beside sealed rows.
    out = tmp_path / "export.json"
    for command in (
        ("export", "--user", admin.user_id, "--out", str(out)),
        ("pii", "backfill"),
        ("tiers", "run", "--older-than-days", "0"),
    ):
        done = cli(dsn, *command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "master key" in done.stderr, (command, done.stderr)
    assert not out.exists()


def upload(url: str, actor: Actor, data: bytes, name: str = "notes.txt") -> httpx.Response:
    return httpx.post(
        f"{url}/files",
        files={"file": (name, data, "text/plain")},
        headers={"Authorization": f"Bearer {actor.api_key}"},
        timeout=60,
    )


def download(url: str, actor: Actor, file_id: str) -> httpx.Response:
    return httpx.get(
        f"{url}/files/{file_id}", headers={"Authorization": f"Bearer {actor.api_key}"}, timeout=60
    )


def test_file_bytes_in_the_directory_store_are_sealed_read_back_and_shredded(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    key = new_key()
    word = marker()
    # Over two blocks of the store (1 MiB each), the marker in each of them and across a block boundary.
    big = (word.encode() + b" " + bytes(range(256)) * 4096)[: (1 << 20) - 5] + word.encode() * 30 + b"end"
    small = f"file body {word}".encode()
    directory = tmp_path / "files"
    env = {"THREADLINE_FILE_STORAGE": "directory", "THREADLINE_FILE_DIRECTORY": str(directory)}
    # Stored before encryption was on: read as they are, one of them starting as sealed bytes do.
    legacy = [b"an old plain file", b"\x1etlb1\x01" + os.urandom(16 + 12 + 3000)]
    with serve_process(dsn, THREADLINE_RUN_QUEUE=unique("q"), **env) as url:
        admin = create_admin(loop, dsn, url)
        old = [upload(url, admin, data).json()["id"] for data in legacy]
        admin.client.close()
    with sealed_server(dsn, key, THREADLINE_KEY_CACHE_SECONDS="0", **env) as url:
        ids = []
        for data in (small, big * 2):
            created = upload(url, admin, data)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        stored = [p for p in directory.rglob("*") if p.is_file()]
        assert len(stored) == 4
        for path in stored:
            assert word.encode() not in path.read_bytes()
        assert download(url, admin, ids[0]).content == small
        assert download(url, admin, ids[1]).content == big * 2
        assert [download(url, admin, i).content for i in old] == legacy
        shred = cli(dsn, "keys", "shred", "--tenant", admin.tenant_id, THREADLINE_MASTER_KEY=key)
        assert shred.returncode == 0, shred.stderr
        for file_id in ids:
            gone = download(url, admin, file_id)
            assert gone.status_code == 410, gone.text
            assert gone.json()["errors"][0]["extensions"]["code"] == "CONTENT_UNAVAILABLE"
        assert [download(url, admin, i).content for i in old] == legacy  # never sealed: nothing to shred


def test_file_bytes_in_an_s3_compatible_store_are_sealed_and_read_back(loop: Loop, dsn: str) -> None:
    store = FakeS3()
    word = marker()
    data = f"bucket body {word}".encode() * 1000
    env = {
        "THREADLINE_FILE_STORAGE": "s3",
        "THREADLINE_FILE_S3_ENDPOINT": f"http://127.0.0.1:{store.port}",
        "THREADLINE_FILE_S3_BUCKET": "bucket",
        "THREADLINE_FILE_S3_REGION": "eu-central-1",
        "THREADLINE_FILE_S3_ACCESS_KEY": "test-key",
        "THREADLINE_FILE_S3_SECRET_KEY": "test-secret",
    }
    try:
        with sealed_server(dsn, new_key(), **env) as url:
            admin = create_admin(loop, dsn, url)
            created = upload(url, admin, data)
            assert created.status_code == 201, created.text
            assert store.refused == 0 and len(store.objects) == 1
            (body,) = store.objects.values()
            assert word.encode() not in body and len(body) > len(data)
            assert download(url, admin, created.json()["id"]).content == data
            admin.client.close()
    finally:
        store.stop()


def test_a_deleted_or_edited_message_leaves_no_opened_text_in_the_process(loop: Loop, dsn: str) -> None:
    """The cache of opened values (crypto.keyring) of the server's own process: a delete and an edit drop the
    text they remove, erasure drops the erased user's (their key is forgotten)."""
    from threadline import crypto

    server = ServerThread(
        test_settings(dsn, migrate_on_start=False, master_key=new_key(), run_queue=unique("q"))
    )
    server.start()
    try:
        admin = create_admin(loop, dsn, server.url)
        keyring = crypto.active()
        assert keyring is not None

        def cached() -> set[str]:
            return {text for _, text in list(keyring._plain.values())}

        cid = create_conversation(admin)
        gone, edited, kept = (f"{what} {marker()}" for what in ("deleted", "edited", "kept"))
        root = start_thread(admin, cid, kept)
        doomed = reply(admin, root, gone)
        changed = reply(admin, root, edited)
        tree = "query($r: ID!) { threadTree(rootId: $r) { nodes { content } } }"
        assert {n["content"] for n in admin.client.ok(tree, {"r": root})["threadTree"]["nodes"]} == {
            kept,
            gone,
            edited,
        }
        assert {kept, gone, edited} <= cached()
        admin.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": doomed})
        admin.client.ok(EDIT.replace("content edits { content }", ""), {"m": changed, "x": "new words"})
        assert gone not in cached() and edited not in cached()
        assert kept in cached()  # what was not touched stays
        assert admin.client.ok(MESSAGE, {"id": root})["node"]["content"] == kept
        # Anonymisation masks a member's PII: the unmasked text leaves the cache too.
        user = admin.client.ok(
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": f"{unique('u')}@example.com", "role": "MEMBER"}},
        )["userCreate"]["id"]
        secret = admin.client.ok(
            'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "t") { secret } }', {"u": user}
        )["apiKeyCreate"]["secret"]
        member = Actor(admin.tenant_id, user, secret, Client(server.url, secret))
        join(admin, member, cid)
        private = f"mail me at jane.{marker()}@example.com"
        reply(member, root, private)
        assert private in {n["content"] for n in admin.client.ok(tree, {"r": root})["threadTree"]["nodes"]}
        assert private in cached()
        admin.client.ok("mutation($u: ID!) { userAnonymise(userId: $u) { messagesMasked } }", {"u": user})
        assert private not in cached()
        member.client.close()
        admin.client.close()
    finally:
        server.stop()
        crypto.install(None)  # this process's other servers run without a key


def test_keys_seal_seals_content_parts_and_attachment_entries_stored_before(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    key = new_key()
    word = marker()
    with serve_process(dsn, THREADLINE_RUN_QUEUE=unique("q")) as url:  # no key: stored plain
        admin = create_admin(loop, dsn, url)
        imported = admin.client.ok(REPORT, {"i": {"format": "CLAUDE", "data": claude_file(word)}})[
            "conversationImportReport"
        ]
        admin.client.close()
    assert {"message.content", "message.parts", "message_attachment.data"} <= set(scan(loop, dsn, word))
    done = cli(dsn, "keys", "seal", "--batch", "2", THREADLINE_MASTER_KEY=key)
    assert done.returncode == 0, done.stderr
    assert '"finished": true' in done.stdout
    assert_sealed_everywhere(loop, dsn, word)
    again = cli(dsn, "keys", "seal", THREADLINE_MASTER_KEY=key)  # nothing left: nothing sealed twice
    assert again.returncode == 0 and '"rowsSealed": 0' in again.stdout, again.stdout
    out = tmp_path / "export.json"
    (conversation,) = imported["conversations"]
    exported = cli(
        dsn, "export", "--conversation", conversation["id"], "--out", str(out), THREADLINE_MASTER_KEY=key
    )
    assert exported.returncode == 0, exported.stderr
    document = out.read_text()
    assert f"hotels {word}" in document and f"ex {word}" in document and f"near {word}" in document


def test_a_zip_import_stores_the_files_it_carries_sealed_and_points_the_parts_at_them(
    loop: Loop, dsn: str, tmp_path: Path
) -> None:
    """The archive's members are matched with attachment entries read through the decoders (their names are
    sealed), stored sealed in the directory store, and the entries rewritten sealed."""
    import zipfile

    from tests.test_files import file_ids

    key = new_key()
    word = marker()
    directory = tmp_path / "files"
    env = {"THREADLINE_FILE_STORAGE": "directory", "THREADLINE_FILE_DIRECTORY": str(directory)}
    conversation = claude_file(word)
    conversation[0]["chat_messages"][0]["files"] = [{"file_name": "plan.txt"}]
    target = tmp_path / "claude.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("conversations.json", json.dumps(conversation))
        archive.writestr("files/plan.txt", f"the plan: {word}".encode())
    with sealed_server(dsn, key, **env) as url:
        admin = create_admin(loop, dsn, url)
        done = cli(dsn, "import", str(target), "--format", "claude", "--api-key", admin.api_key, "--quiet",
                   THREADLINE_MASTER_KEY=key, **env)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["imported"] == 1 and report["files"] == 1, report
        assert_sealed_everywhere(loop, dsn, word)
        stored = [p for p in directory.rglob("*") if p.is_file()]
        assert len(stored) == 1 and word.encode() not in stored[0].read_bytes()
        (file_id,) = file_ids(admin)
        assert download(url, admin, file_id).content == f"the plan: {word}".encode()
        admin.client.close()


def test_opened_values_of_a_stale_key_leave_the_cache_as_new_ones_come_in() -> None:
    """What bounds a deleted text's stay in another process's cache (one that cannot hear of the delete): an entry
    whose key was read over THREADLINE_KEY_CACHE_SECONDS ago is never served again, and leaves with the next
    value opened."""
    import time
    from typing import cast

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from threadline.crypto import envelope
    from threadline.crypto.keyring import DataKey, Keyring

    ring = Keyring(cast(Any, None), plaintext_cache_bytes=1 << 20, cache_seconds=30)
    tenant = uuid.uuid4()
    old = DataKey(uuid.uuid4(), tenant, None, AESGCM(os.urandom(32)), time.monotonic())
    new = DataKey(uuid.uuid4(), tenant, None, AESGCM(os.urandom(32)), time.monotonic())
    for key in (old, new):
        ring._keys[key.id] = key
        ring._by_raw[key.id.bytes] = key
    secret = envelope.seal(cast(AESGCM, old.cipher), old.id, tenant, "deleted elsewhere")
    assert ring.open_text_bytes(secret.encode()) == "deleted elsewhere"
    assert "deleted elsewhere" in {t for _, t in ring._plain.values()}
    old.loaded_at -= 31  # its key read 31 seconds ago: the entry is no longer served
    later = envelope.seal(cast(AESGCM, new.cipher), new.id, tenant, "a later read")
    assert ring.open_text_bytes(later.encode()) == "a later read"
    assert {t for _, t in ring._plain.values()} == {"a later read"}
    assert ring._plain_bytes == sum(len(v) + len(t) + 200 for v, (_, t) in ring._plain.items())
