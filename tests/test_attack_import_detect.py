"""Format detection of files a messy tool wrote: keys written with JSON escapes are the keys they mean, as the API's
decoded value has them, so a file and the same JSON sent through the API are recognised alike."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Actor
from tests.test_porting_cli import report_of, run

REPORT = (
    """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) { format imported } }"""
)


def test_a_signature_key_written_with_escapes_is_recognised_in_a_file_as_through_the_api(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    message = {"uuid": "m1", "sender": "human", "text": "hello", "created_at": "2025-03-01T10:00:00Z"}
    raw = '[{"na\\u006De": "Escaped", "\\u0075uid": "claude-escaped", "\\u0063hat_messages": ' + json.dumps(
        [message]
    )
    path = tmp_path / "conversations.json"
    path.write_text(raw + "}]")
    result = run(dsn, "import", str(path), "--api-key", admin.api_key, "--quiet")
    # Before the fix (every key naming the format escaped): exit 2, "no key of the first conversation is known".
    assert result.returncode == 0, result.stderr
    assert (report_of(result)["format"], report_of(result)["imported"]) == ("claude", 1)
    through_api = admin.client.ok(REPORT, {"i": {"data": json.loads(path.read_text())}})
    assert through_api["conversationImportReport"] == {
        "format": "CLAUDE",
        "imported": 0,
    }  # the same, already in


def test_a_utf16_file_is_refused_saying_it_is_not_utf8(admin: Actor, dsn: str, tmp_path: Path) -> None:
    message = {"uuid": "m1", "sender": "human", "text": "hello"}
    path = tmp_path / "conversations.json"
    path.write_bytes(json.dumps([{"uuid": "claude-utf16", "chat_messages": [message]}]).encode("utf-16"))
    result = run(dsn, "import", str(path), "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 2
    # Before the fix: "the file is not a JSON object or array", of a file that is one.
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"threadline: {path}: cannot tell the export format: the file is UTF-16 or UTF-32 text, and exports are "
            "read as UTF-8: save it as UTF-8;"
        )
    )
