"""Hostile import and export: unstorable text, times out of range, archives zipfile cannot read, trees that made
planning or merging quadratic, ids longer than kept, and exports past their bounds or naming files not held."""

from __future__ import annotations

import io
import json
import struct
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Actor, Client, Loop, ServerThread, test_settings
from tests.test_files import PNG, download, upload
from tests.test_import_bulk import node
from tests.test_import_merge_ahead import _import, write
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import FIXTURES, IMPORT_REPORT, outline, sql
from threadline.files import archives
from threadline.ids import Kind, decode_id, encode_id
from threadline.porting import bulk_repository, chatgpt, exporter
from threadline.porting.jsonstream import JsonArrayReader
from threadline.porting.model import ImportedMessage

REPAIRED = "replaced with U+FFFD"


def _chatgpt(bad: str) -> Any:
    text = {"content_type": "text", "parts": [f"x{bad}"]}
    message = {
        "id": f"a{bad}",
        "author": {"role": "user"},
        "content": text,
        "metadata": {"model_slug": f"m{bad}"},
    }
    node = {"id": f"a{bad}", "parent": None, "children": [], "message": message}
    return [
        {"id": f"c{bad}", "title": f"t{bad}", "default_model_slug": f"m{bad}", "mapping": {f"a{bad}": node}}
    ]


def _claude(bad: str) -> Any:
    message = {"uuid": f"m{bad}", "sender": "human", "text": f"x{bad}", "created_at": "2024-01-01T00:00:00Z"}
    return [{"uuid": f"c{bad}", "name": f"t{bad}", "chat_messages": [message]}]


def _threadline(bad: str) -> Any:
    conversation = {"title": f"t{bad}", "tags": [f"g{bad}"], "model": f"m{bad}", "description": f"d{bad}"}
    message = {"id": f"a{bad}", "role": "user", "content": f"x{bad}", "model": f"q{bad}"}
    return [
        {"conversation_id": f"c{bad}", "metadata": {"export_version": "1.0"}, "conversation": conversation,
         "messages": [message]}
    ]  # fmt: skip


def _librechat(bad: str) -> Any:
    message = {"messageId": f"a{bad}", "parentMessageId": None, "text": f"x{bad}", "isCreatedByUser": True}
    return {"conversationId": f"c{bad}", "title": f"t{bad}", "messages": [message]}


def _openwebui(bad: str) -> Any:
    message = {"id": f"a{bad}", "role": "user", "content": f"x{bad}", "model": f"m{bad}"}
    chat = {"title": f"t{bad}", "tags": [f"g{bad}"], "history": {"messages": {f"a{bad}": message}}}
    return [{"id": f"c{bad}", "title": f"t{bad}", "chat": chat}]


FILES = {
    "chatgpt": _chatgpt,
    "claude": _claude,
    "threadline": _threadline,
    "librechat": _librechat,
    "openwebui": _openwebui,
}


@pytest.mark.parametrize("fmt", sorted(FILES))
@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_file_with_nul_or_lone_surrogates_imports_with_them_replaced_and_reported(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path, fmt: str, bad: str
) -> None:
    # Valid JSON escapes (\u0000, \ud800) but no text PostgreSQL takes: before the fix the driver refused the first
    # statement naming them (the look-up of earlier imports by source id) and the CLI died with a traceback.
    path = tmp_path / "portattack_unstorable.json"
    path.write_text(json.dumps(FILES[fmt](bad)))
    result = run(dsn, "import", str(path), "--format", fmt, "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = report_of(result)
    assert (report["imported"], report["failed"]) == (1, 0)
    assert any(w.startswith("item 0: ") and w.endswith(REPAIRED) for w in report["warnings"])
    (row,) = sql(
        loop,
        dsn,
        """SELECT c.title, m.content FROM conversation c JOIN message m ON m.conversation_id = c.id
           WHERE c.tenant_id = (SELECT tenant_id FROM app_user WHERE id = $1)""",
        decode_id(admin.user_id, Kind.USER),
    )
    assert (row["title"], row["content"]) == ("t\ufffd", "x\ufffd")
    # The same bytes again: known, nothing duplicated.
    again = report_of(run(dsn, "import", str(path), "--format", fmt, "--api-key", admin.api_key, "--quiet"))
    assert (again["imported"], again["skipped"], again["failed"]) == (0, 1, 0)


def test_an_escaped_backslash_before_u0000_is_text_and_kept(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "portattack_backslash.json"
    path.write_text(json.dumps(_claude("\\u0000")))
    report = report_of(run(dsn, "import", str(path), "--format", "claude", "--api-key", admin.api_key))
    assert (report["imported"], report["warnings"]) == (1, [])
    (row,) = sql(
        loop, dsn, "SELECT content FROM message WHERE content LIKE 'x%' AND import_key = $1", "m\\u0000"
    )
    assert row["content"] == "x\\u0000"


TIMES = [
    # 9999-12-31 UTC, then a reply dated before it: it follows it by a microsecond, past datetime.max.
    ("9999-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z"),
    # Valid ISO 8601, but past the range once turned to UTC.
    ("0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-14:00"),
]


@pytest.mark.parametrize(("first", "second"), TIMES)
def test_times_out_of_range_read_as_absent_and_the_conversation_imports(
    admin: Actor, first: str, second: str
) -> None:
    messages = [
        {"uuid": "m", "sender": "human", "text": "x", "created_at": first},
        {"uuid": "k", "sender": "assistant", "text": "y", "created_at": second, "parent_message_uuid": "m"},
    ]
    data = {"uuid": "far", "name": "far", "created_at": first, "chat_messages": messages}
    body = admin.client.execute(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}})
    assert "errors" not in body, body  # before the fix: INTERNAL, or "could not be stored: OverflowError"
    report = body["data"]["conversationImportReport"]
    assert (report["imported"], report["failed"], report["messageCount"]) == (1, 0, 2)
    assert all(c["createdAt"] < "9999-01-01" for c in report["conversations"])


def test_a_file_time_out_of_range_does_not_stop_the_cli(admin: Actor, dsn: str, tmp_path: Path) -> None:
    messages = [
        {"uuid": "m", "sender": "human", "text": "x", "created_at": "9999-12-31T23:59:59.999999Z"},
        {"uuid": "k", "sender": "assistant", "text": "y", "created_at": "2000-01-01T00:00:00Z", "parent_message_uuid": "m"},
    ]  # fmt: skip
    path = tmp_path / "portattack_times.json"
    path.write_text(json.dumps([{"uuid": "far", "name": "far", "chat_messages": messages}]))
    result = run(dsn, "import", str(path), "--format", "claude", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 0, result.stderr  # before the fix: OverflowError, a traceback, exit 1
    assert (report_of(result)["imported"], report_of(result)["failed"]) == (1, 0)


# -- archives zipfile cannot read: encrypted members, unknown compression methods, corrupt data ------------------

CLAUDE_FILE = (FIXTURES / "claude" / "conversations.json").read_text()


def _owned(loop: Loop, dsn: str, admin: Actor) -> tuple[int, int]:
    (row,) = sql(
        loop,
        dsn,
        """SELECT (SELECT count(*) FROM conversation WHERE tenant_id = t.id) AS c,
                  (SELECT count(*) FROM message WHERE tenant_id = t.id) AS m
           FROM (SELECT tenant_id AS id FROM app_user WHERE id = $1) t""",
        decode_id(admin.user_id, Kind.USER),
    )
    return row["c"], row["m"]


def _archive(path: Path, members: dict[str, bytes], *, damaged: str, how: str) -> Path:
    """A zip whose member `damaged` is marked encrypted, compressed by an unknown method (99: AES), or corrupt."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    data = bytearray(path.read_bytes())
    target = damaged.encode()
    for signature, name_at, length_at, flags_at, method_at in (
        (b"PK\x03\x04", 30, 26, 6, 8),
        (b"PK\x01\x02", 46, 28, 8, 10),
    ):
        at = data.find(signature)
        while at >= 0:
            length = struct.unpack_from("<H", data, at + length_at)[0]
            if bytes(data[at + name_at : at + name_at + length]) == target:
                if how == "encrypted":
                    struct.pack_into(
                        "<H", data, at + flags_at, struct.unpack_from("<H", data, at + flags_at)[0] | 1
                    )
                elif how == "method":
                    struct.pack_into("<H", data, at + method_at, 99)
                elif signature == b"PK\x03\x04":  # corrupt: the deflate stream's first bytes
                    start = at + name_at + length + struct.unpack_from("<H", data, at + 28)[0]
                    data[start : start + 8] = b"\xff" * 8
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["encrypted", "method"])
def test_an_export_file_zipfile_cannot_open_is_refused_by_name_before_anything_is_imported(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path, how: str
) -> None:
    archive = _archive(
        tmp_path / "portattack_locked.zip",
        {"conversations.json": CLAUDE_FILE.encode()},
        damaged="conversations.json",
        how=how,
    )
    why = {
        "encrypted": "it is encrypted (a password-protected archive)",
        "method": "its compression method (99) is not supported",
    }
    for detect in ([], ["--format", "claude"]):
        result = run(dsn, "import", str(archive), *detect, "--api-key", admin.api_key, "--quiet")
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (
            2, f"threadline: {archive}:conversations.json cannot be read: {why[how]}"
        )  # fmt: skip
    assert _owned(loop, dsn, admin) == (0, 0)


def test_an_export_file_with_corrupt_data_is_refused_without_a_traceback(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    archive = _archive(
        tmp_path / "portattack_corrupt.zip",
        {"conversations.json": CLAUDE_FILE.encode()},
        damaged="conversations.json",
        how="corrupt",
    )
    result = run(dsn, "import", str(archive), "--format", "claude", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 1, result.stderr  # before the fix: zlib.error, a traceback
    assert "Traceback" not in result.stderr
    (failure,) = report_of(result)["failures"]
    assert failure["message"].startswith(
        f"archive refused: {archive}:conversations.json cannot be read: Error -3 "
    )
    assert _owned(loop, dsn, admin) == (0, 0)


@pytest.mark.parametrize("how", ["encrypted", "method", "corrupt"])
def test_an_attachment_zipfile_cannot_read_is_skipped_and_reported_and_the_import_stays(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path, how: str
) -> None:
    conversations = json.loads(CLAUDE_FILE)
    conversations[0]["chat_messages"][0]["files"] = [{"file_name": "pic.png"}]
    members = {
        "conversations.json": json.dumps(conversations).encode(),
        "pic.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
    }
    archive = _archive(tmp_path / "portattack_attachment.zip", members, damaged="pic.png", how=how)
    result = run(dsn, "import", str(archive), "--format", "claude", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 0, (
        result.stderr
    )  # before the fix: a traceback after the conversations were in
    report = report_of(result)
    assert (report["imported"], report["files"]) == (2, 0)
    (skipped,) = report["filesSkipped"]
    assert skipped.startswith("pic.png: cannot be read: ")
    assert _owned(loop, dsn, admin)[0] == 2


# -- export: a deleted message's attachments ------------------------------------------------------------------

MESSAGES = "query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node { id content } } } } }"
EXPORT = "query($c: ID!) { conversationExport(id: $c) }"


def test_a_deleted_messages_imported_attachments_are_not_exported(admin: Actor, loop: Loop, dsn: str) -> None:
    attachment = {
        "file_name": "doc.txt",
        "file_size": 14,
        "file_type": "text/plain",
        "extracted_content": "the doc text",
    }
    data = {
        "uuid": "deleted-attachment", "name": "n",
        "chat_messages": [
            {"uuid": "q", "sender": "human", "text": "read this", "attachments": [attachment], "files": [{"file_name": "pic.png"}]},
            {"uuid": "a", "sender": "assistant", "text": "done", "parent_message_uuid": "q"},
        ],
    }  # fmt: skip
    report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}})[
        "conversationImportReport"
    ]
    conversation = report["conversations"][0]["id"]
    edges = admin.client.ok(MESSAGES, {"c": conversation})["conversation"]["messages"]["edges"]
    (question,) = [e["node"]["id"] for e in edges if e["node"]["content"] == "read this"]
    before = admin.client.ok(EXPORT, {"c": conversation})["conversationExport"]["messages"]
    assert [m["attachments"] for m in before if m["id"] == question] == [
        [
            {"type": "file", "filename": "doc.txt", "mime_type": "text/plain", "size_bytes": 14, "extracted_content": "the doc text"},
            {"type": "file", "filename": "pic.png"},
        ]
    ]  # fmt: skip
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": question})
    document = admin.client.ok(EXPORT, {"c": conversation})["conversationExport"]
    (entry,) = [m for m in document["messages"] if m["id"] == question]
    assert (entry["content"], entry["attachments"]) == (
        "",
        [],
    )  # before the fix: the document's text, exported
    assert "the doc text" not in json.dumps(document)
    # Nor kept: the message's attachment entries (the document's extracted text) go with its content.
    held = sql(
        loop,
        dsn,
        "SELECT count(*) AS n FROM message_attachment WHERE message_id = $1",
        decode_id(question, Kind.MESSAGE),
    )
    assert held[0]["n"] == 0


# -- ChatGPT trees that made planning quadratic -----------------------------------------------------------------


class _Counted(str):
    """A node id that counts how often it is compared by value (a look through a list compares each element)."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Counted.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def _node(key: str, parent: str | None, children: list[str], kind: str = "text") -> dict[str, Any]:
    content: dict[str, Any] = (
        {"content_type": "thoughts", "thoughts": [{"summary": "s", "content": f"thinking {key}"}]}
        if kind == "thoughts"
        else {"content_type": "text", "parts": [f"text {key}"]}
    )
    message = {"id": key, "author": {"role": "assistant"}, "content": content}
    return {"id": key, "parent": parent, "children": children, "message": message}


def test_a_node_with_thousands_of_replies_is_read_without_comparing_them_pairwise() -> None:
    n = 3000
    replies = [_Counted(f"r{i}") for i in range(n)]
    # Half the replies are not in the root's own list (an export may leave them out): each is then placed after it.
    mapping: dict[str, Any] = {"root": _node("root", None, replies[: n // 2])}
    mapping.update({key: _node(key, "root", []) for key in replies})
    _Counted.compared = 0
    conversation = chatgpt.parse({"id": "wide", "mapping": mapping})
    assert len(conversation.messages) == n + 1
    assert [m.key for m in conversation.messages[1:]] == replies
    # Before the fix each reply was looked for in the root's list: n * n / 2 comparisons (4.5 million; 60,000 replies
    # in an 8 MB request took 30 s of the server's CPU before the message cap refused it).
    assert _Counted.compared < 4 * n


def test_a_node_with_thousands_of_reasoning_replies_is_folded_without_comparing_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 2000
    mapping: dict[str, Any] = {"root": _node("root", None, [f"t{i}" for i in range(n)])}
    for i in range(n):
        mapping[f"t{i}"] = _node(f"t{i}", "root", [f"a{i}"], "thoughts")
        mapping[f"a{i}"] = _node(f"a{i}", f"t{i}", [])

    def compared(self: ImportedMessage, other: object) -> bool:
        raise AssertionError("messages compared by value")  # before the fix: n * n / 2 times (8,000: 20 s)

    monkeypatch.setattr(ImportedMessage, "__eq__", compared)
    conversation = chatgpt.parse({"id": "wide-reasoning", "mapping": mapping})
    assert len(conversation.messages) == n + 1
    answer = conversation.messages[1]
    assert (answer.key, answer.parent_key, [p["type"] for p in answer.parts or []]) == (
        "a0", "root", ["reasoning", "text"]
    )  # fmt: skip


def test_a_chain_of_reasoning_nodes_gives_its_answer_a_bounded_number_of_parts() -> None:
    n = 1000
    keys = [f"t{i}" for i in range(n)]
    mapping = {
        key: _node(key, keys[i - 1] if i else None, [keys[i + 1]] if i + 1 < n else ["answer"], "thoughts")
        for i, key in enumerate(keys)
    }
    mapping["answer"] = _node("answer", keys[-1], [])
    conversation = chatgpt.parse({"id": "deep-reasoning", "mapping": mapping})
    (answer,) = conversation.messages
    # Before the fix every node of the chain took a copy of all the reasoning above it: n * n / 2 parts in memory
    # (8,000 nodes: 300 MB; an 8 MB request could hold 60,000).
    assert answer.parts is not None and len(answer.parts) == chatgpt.MAX_FOLDED_PARTS + 1
    assert answer.parts[-2]["text"] == f"s\n\nthinking t{n - 1}"  # the reasoning nearest the answer is kept
    assert answer.parts[-1] == {"type": "text", "text": "text answer"}
    assert f"1 answer(s) had more than {chatgpt.MAX_FOLDED_PARTS} reasoning parts" in " ".join(
        conversation.warnings
    )


# -- export zips: only the files the messages hold ----------------------------------------------------------------


def test_an_imported_stored_file_entry_naming_anothers_file_puts_no_bytes_in_a_zip_export(
    admin: Actor, make_user: Any, server: ServerThread, tmp_path: Path, dsn: str
) -> None:
    victim, thief = make_user(admin), make_user(admin)
    secret = PNG + b"the victim's private upload"
    file_id = upload(server.url, victim, secret).json()["id"]
    assert download(server.url, thief, file_id).status_code == 404
    entry = {
        "type": "stored_file",
        "fileId": file_id,
        "name": "loot.png",
        "path": "../loot.png",
        "sha256": "00",
    }
    document = {
        "conversation_id": "names-a-file", "metadata": {"export_version": "1.0"}, "conversation": {"title": "t"},
        "messages": [{"id": "a", "role": "user", "content": "x", "attachments": [entry]}],
    }  # fmt: skip
    report = thief.client.ok(IMPORT_REPORT, {"i": {"format": "THREADLINE", "data": document}})
    conversation = report["conversationImportReport"]["conversations"][0]["id"]
    out = tmp_path / "portattack_export.zip"
    result = run(dsn, "export", "--conversation", conversation, "--api-key", thief.api_key, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["files"] == 0
    with zipfile.ZipFile(out) as z:
        # Before the fix the zip held `../loot.png` with the victim's bytes: a file id in an import is no capability.
        assert z.namelist() == ["conversations.json"]
        assert secret not in z.read("conversations.json")


# -- attachments of an archive: bounded expansion, each member read at most once --------------------------------


def _with_files(tmp_path: Path, members: dict[str, bytes], named: list[str]) -> Path:
    """A Claude export zip whose first conversation's messages each name one of `named` (in turn) as a file."""
    conversations = json.loads(CLAUDE_FILE)
    for i, message in enumerate(conversations[0]["chat_messages"]):
        message["files"] = [{"file_name": named[i % len(named)]}]
    path = tmp_path / "portattack_files.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conversations.json", json.dumps(conversations))
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_a_member_many_messages_name_is_read_once_when_it_cannot_be_stored(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    conversations = json.loads(CLAUDE_FILE)
    assert len(conversations[0]["chat_messages"]) >= 3
    archive = _with_files(tmp_path, {"big.bin": bytes(range(256)) * 64}, ["big.bin"])
    result = run(
        dsn, "import", str(archive), "--format", "claude", "--api-key", admin.api_key, "--quiet",
        env={"THREADLINE_FILE_TENANT_QUOTA_BYTES": "1000"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    # Before the fix: read (and refused by the quota) again for every message naming it, one line each.
    assert (report["files"], report["filesSkipped"]) == (
        0, ["big.bin: The tenant's files would pass its quota of 1000 bytes (THREADLINE_FILE_TENANT_QUOTA_BYTES)"]
    )  # fmt: skip


def test_attachments_count_against_the_archives_total_expansion(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    one, two = bytes(range(256)) * 8, bytes(reversed(range(256))) * 8
    archive = _with_files(tmp_path, {"one.bin": one, "two.bin": two}, ["one.bin", "two.bin"])
    with zipfile.ZipFile(archive) as z:
        exports = z.getinfo("conversations.json").file_size
    limit = str(exports + len(one) + len(two) - 1)
    result = run(
        dsn, "import", str(archive), "--format", "claude", "--api-key", admin.api_key, "--quiet",
        env={"THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES": limit},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    # Before the fix only the conversation files counted: every attachment member (up to 10,000 of 25 MB) was read.
    assert report["files"] == 1
    (skipped,) = report["filesSkipped"]  # whichever was read second
    assert skipped in [
        f"{name}: the archive's files expand past THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES"
        for name in ("one.bin", "two.bin")
    ]


def test_a_number_too_long_for_an_integer_is_reported_as_such_not_as_nesting() -> None:
    data = b'[{"a": 1}, ' + b"7" * 5000 + b', {"b": ' + b"9" * 5000 + b"}, [2]]"
    items = list(JsonArrayReader(io.BytesIO(data), max_item_bytes=1 << 20))
    assert [i.value for i in items] == [{"a": 1}, None, None, [2]]
    too_long = (
        "malformed JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"
    )
    # Before the fix both said "too deeply nested": the standard library's ValueError has no `msg`.
    assert [i.error for i in items[1:3]] == [
        f"{too_long} at byte 11 (line 1, column 12)",
        f"{too_long} at byte 5013 (line 1, column 5014)",
    ]


# -- userExport through the API: bounded by what one response may carry ------------------------------------------

USER_EXPORT = "query($u: ID!) { userExport(userId: $u) }"
RESPONSE_LIMIT = 40_000
MESSAGE_LIMIT = 50


@pytest.fixture(scope="module")
def narrow(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn, migrate_on_start=False, response_max_bytes=RESPONSE_LIMIT, query_max_messages=MESSAGE_LIMIT
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_a_user_export_past_the_response_limit_stops_reading_and_says_where_to_go(
    admin: Actor, narrow: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = [
        {"uuid": f"big-{i}", "name": f"big {i}", "chat_messages": [{"uuid": "m", "sender": "human", "text": "x" * 8000}]}
        for i in range(20)
    ]  # fmt: skip
    assert (
        admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": big}})["conversationImportReport"][
            "imported"
        ]
        == 20
    )
    built: list[uuid.UUID] = []
    document = exporter.conversation_document

    async def counted(db: Any, tenant_id: uuid.UUID, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(conversation["id"])
        return await document(db, tenant_id, conversation, *args, **kwargs)

    monkeypatch.setattr(exporter, "conversation_document", counted)  # the server runs in this process
    error = Client(narrow.url, admin.api_key).error(USER_EXPORT, {"u": admin.user_id})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        f"The export passes {RESPONSE_LIMIT} bytes, the most one response may carry (THREADLINE_RESPONSE_MAX_BYTES): "
        "use `threadline export --user` for larger exports",
    )
    # Before the fix all 20 conversations were read (and decoded, and encoded) before the response was refused.
    assert len(built) <= RESPONSE_LIMIT // 8000 + 1
    # On the server with the default limit the same export is whole.
    monkeypatch.undo()
    assert len(admin.client.ok(USER_EXPORT, {"u": admin.user_id})["userExport"]["conversations"]) == 20


def test_a_conversation_export_past_the_message_limit_is_refused_before_it_is_read(
    admin: Actor, narrow: ServerThread
) -> None:
    chain = [
        {
            "uuid": f"m{i}",
            "sender": "human",
            "text": f"m{i}",
            "parent_message_uuid": f"m{i - 1}" if i else None,
        }
        for i in range(MESSAGE_LIMIT + 1)
    ]
    data = {"uuid": "long", "name": "long", "chat_messages": chain}
    report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}})[
        "conversationImportReport"
    ]
    conversation = report["conversations"][0]["id"]
    markdown = "query($c: ID!) { conversationExport(id: $c, format: MARKDOWN, allBranches: true) }"
    for query in (EXPORT, markdown):
        error = Client(narrow.url, admin.api_key).error(query, {"c": conversation})
        # Before the fix the whole document was built (and returned): exports were charged to no budget.
        assert (error["extensions"]["code"], error["message"]) == (
            "BAD_USER_INPUT",
            f"The conversation holds {MESSAGE_LIMIT + 1} messages; one export through the API may carry at most "
            f"{MESSAGE_LIMIT} (THREADLINE_QUERY_MAX_MESSAGES): use `threadline export --conversation` for larger ones",
        )
    assert "m50" in admin.client.ok(markdown, {"c": conversation})["conversationExport"]
    assert (
        len(admin.client.ok(EXPORT, {"c": conversation})["conversationExport"]["messages"])
        == MESSAGE_LIMIT + 1
    )


class _NoScan(dict[str, Any]):
    def items(self) -> Any:
        raise AssertionError("every member looked through for one pointer")


def test_chatgpt_file_pointers_find_their_member_without_looking_through_every_member(tmp_path: Path) -> None:
    path = tmp_path / "portattack_pointers.zip"
    names = ["file-abc-photo.png", "file-xyz.jpg", "file-q", *(f"file-{i:05}-other.png" for i in range(2000))]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("conversations.json", "[]")
        for name in names:
            z.writestr(f"dir/{name}", name)
    found = archives.ArchiveFiles.open(path)
    found.by_base = _NoScan(found.by_base)  # before the fix each pointer went through all of them: 2,003 here
    try:
        hits = {
            pointer: (info.filename if (info := found.find({"pointer": pointer})) is not None else None)
            for pointer in ("file-service://file-abc", "sediment://file-xyz", "file-service://file-q",
                            "file-service://file-ab", "file-service://file-missing", "file-service://")
        }  # fmt: skip
    finally:
        found.archive.close()
    assert hits == {
        "file-service://file-abc": "dir/file-abc-photo.png",
        "sediment://file-xyz": "dir/file-xyz.jpg",
        "file-service://file-q": "dir/file-q",
        "file-service://file-ab": None,
        "file-service://file-missing": None,
        "file-service://": None,
    }


# -- a merge re-import climbing a chain of nodes that are never stored --------------------------------------------


def test_a_new_node_under_a_long_chain_of_empty_nodes_is_merged_in_few_rounds(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = 256
    root = {"id": "root", "parent": None, "children": ["a"], "message": None}
    mapping: dict[str, Any] = {"root": root, "a": node("a", "root", ["e0"], "user", "hello", 1730000000.0)}
    for i in range(chain):  # empty messages: seen by the first import, never stored
        children = [f"e{i + 1}"] if i + 1 < chain else []
        mapping[f"e{i}"] = node(
            f"e{i}", "a" if i == 0 else f"e{i - 1}", children, "user", "", 1730000001.0 + i
        )
    conversation = {"id": "climb", "title": "climb", "mapping": mapping, "current_node": "a"}
    first = report_of(run(dsn, "import", str(write(tmp_path / "v1.json", conversation)), "--format", "chatgpt",
                          "--api-key", admin.api_key, "--quiet"))  # fmt: skip
    assert (first["imported"], first["messages"]) == (1, 1)
    mapping[f"e{chain - 1}"]["children"] = ["new"]
    mapping["new"] = node("new", f"e{chain - 1}", [], "assistant", "below them all", 1730009999.0)
    rounds: list[int] = []
    by_key = bulk_repository.merge_targets_by_key

    async def counted(*args: Any, **kwargs: Any) -> Any:
        rounds.append(len(args[3][0]))  # the keys asked about
        return await by_key(*args, **kwargs)

    monkeypatch.setattr(bulk_repository, "merge_targets_by_key", counted)
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", conversation)))
    assert (merged["merged"], merged["messagesAdded"]) == (1, 1)
    # Before the fix one statement a level: 257 (and 256 * 256 / 2 steps of walking); now the reach doubles.
    assert len(rounds) <= 2 + chain.bit_length()
    assert sum(rounds) <= 2 * chain + 2
    (row,) = sql(loop, dsn, "SELECT id FROM conversation WHERE title = 'climb' AND owner_id = $1",
                 decode_id(admin.user_id, Kind.USER))  # fmt: skip
    assert outline(loop, dsn, encode_id(Kind.CONVERSATION, row["id"])) == [
        (0, "USER", "hello"), (1, "ASSISTANT", "below them all")
    ]  # fmt: skip


# -- ids longer than an import keeps --------------------------------------------------------------------------

IMPORT = "mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id } }"


def test_a_conversation_id_longer_than_an_import_keeps_refuses_the_all_or_nothing_import_whole(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    long_id = "c" * 300
    data = [
        {"uuid": "fine", "name": "fine", "chat_messages": [{"uuid": "m", "sender": "human", "text": "x"}]},
        {"uuid": long_id, "name": "long", "chat_messages": [{"uuid": "m", "sender": "human", "text": "y"}]},
    ]
    error = admin.client.error(IMPORT, {"i": {"format": "CLAUDE", "data": data}})
    # Before the fix: no error, and only the first conversation (the other failed at its insert, unreported).
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "1 conversation(s) cannot be imported, so none was: item 1: its id is 300 characters long; the longest an "
        "import keeps is 255",
    )
    assert _owned(loop, dsn, admin) == (0, 0)
    report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}})[
        "conversationImportReport"
    ]
    assert (report["imported"], [f["index"] for f in report["failures"]]) == (1, [1])


def test_an_api_import_is_planned_off_the_event_loop_and_stops_at_the_message_cap(
    admin: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning an import request is CPU work (seconds for 8 MB): it runs in a worker thread, not on the loop that
    serves every other request, and stops once the planned messages pass THREADLINE_IMPORT_API_MAX_MESSAGES (10,000)
    instead of reading every item first (three items of 6,000 messages: the third is never planned)."""
    import asyncio

    from threadline.porting import importer

    planned: list[tuple[str, bool]] = []
    plan = importer.plan

    def counted(conversation: Any, settings: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:  # a worker thread: no event loop runs there
            on_loop = False
        planned.append((conversation.external_id, on_loop))
        return plan(conversation, settings)

    monkeypatch.setattr(importer, "plan", counted)

    def item(n: int) -> dict[str, Any]:
        messages = [
            {
                "uuid": f"cap-{n}-{i}",
                "sender": "human" if i % 2 == 0 else "assistant",
                "text": "x",
                **({"parent_message_uuid": f"cap-{n}-{i - 1}"} if i else {}),
            }
            for i in range(6000)
        ]
        return {"uuid": f"cap-{n}", "name": f"cap {n}", "chat_messages": messages}

    error = admin.client.error(
        IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": [item(n) for n in range(3)]}}
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert "THREADLINE_IMPORT_API_MAX_MESSAGES" in error["message"], error
    assert planned == [("cap-0", False), ("cap-1", False)]
