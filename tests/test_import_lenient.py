"""What one part of an import cannot keep costs that part, not more (found by the import attack): a number past 64
bits is not an INTERNAL error, a tag too long is left out (not the conversation), one unreadable document of a
Threadline user export fails alone, and a directory named like an export file is not read as one."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.harness import Actor
from tests.test_porting_cli import run
from tests.test_porting_import import IMPORT, IMPORT_REPORT

TAGS = "query($c: ID!) { conversation(id: $c) { tags } }"


def _report(admin: Actor, fmt: str, data: Any) -> dict[str, Any]:
    return dict(
        admin.client.ok(IMPORT_REPORT, {"i": {"format": fmt, "data": data}})["conversationImportReport"]
    )


def test_a_number_past_64_bits_in_an_api_import_is_no_internal_error(admin: Actor) -> None:
    ident = f"big-{uuid.uuid4()}"
    message = {"messageId": f"{ident}-m", "parentMessageId": None, "text": "hello", "isCreatedByUser": True}
    data = {"conversationId": ident, "title": ident, "n": 100000000000000000000, "messages": [message]}
    report = _report(admin, "LIBRECHAT", data)
    assert (report["imported"], report["failed"]) == (1, 0), report
    again = _report(admin, "LIBRECHAT", data)
    assert (again["imported"], again["skipped"], again["failed"]) == (0, 1, 0), again


def test_a_tag_a_live_write_would_refuse_is_left_out_with_a_warning(admin: Actor) -> None:
    ident = f"tags-{uuid.uuid4()}"
    message = {"id": f"{ident}-m", "role": "user", "content": "hi"}
    chat = {"title": ident, "tags": ["kept", "x" * 65], "history": {"messages": {f"{ident}-m": message}}}
    report = _report(admin, "OPENWEBUI", [{"id": ident, "title": ident, "chat": chat}])
    assert (report["imported"], report["failed"]) == (1, 0), report
    assert any("1 tag(s) over 64 characters were left out" in w for w in report["warnings"]), report
    (conversation,) = report["conversations"]
    assert admin.client.ok(TAGS, {"c": conversation["id"]})["conversation"]["tags"] == ["kept"]


def test_one_unreadable_document_of_a_user_export_fails_alone(admin: Actor) -> None:
    (source,) = admin.client.ok(
        IMPORT,
        {
            "i": {
                "format": "CLAUDE",
                "data": [
                    {
                        "uuid": f"src-{uuid.uuid4()}",
                        "name": "n",
                        "chat_messages": [
                            {"uuid": f"q-{uuid.uuid4()}", "sender": "human", "text": "exported"}
                        ],
                    }
                ],
            }
        },  # fmt: skip
    )["conversationImport"]
    document = admin.client.ok("query($c: ID!) { conversationExport(id: $c) }", {"c": source["id"]})
    document = document["conversationExport"]
    document["conversation_id"] = f"copy-{uuid.uuid4()}"
    bad = f"bad-{uuid.uuid4()}"
    report = _report(
        admin, "THREADLINE", {"metadata": {}, "conversations": [document, {"conversation_id": bad}]}
    )
    assert (report["imported"], report["failed"]) == (1, 1), report
    (failure,) = report["failures"]
    assert failure["externalId"] == bad, failure


def test_a_directory_named_like_an_export_file_is_not_read_as_one(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "export" / "conversations.json").mkdir(parents=True)
    result = run(dsn, "import", str(tmp_path / "export"), "--format", "claude", "--api-key", admin.api_key)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "no conversations.json or conversations-NNN.json in it" in result.stderr, result.stderr
