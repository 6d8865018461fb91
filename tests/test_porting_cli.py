"""`threadline import` and `threadline export` as a user runs them: a subprocess against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, Loop
from tests.test_porting_export import _normalised, branched_conversation, export
from tests.test_porting_import import FIXTURES, sql

THREADLINE = [sys.executable, "-m", "threadline.cli"]


def run(dsn: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1", **(env or {})}
    environment.pop("THREADLINE_API_KEY", None)
    return subprocess.run([*THREADLINE, *args], capture_output=True, text=True, env=environment, timeout=300)


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_import_of_a_split_export_directory_shows_progress_and_counts(
    admin: Actor, dsn: str, loop: Loop
) -> None:
    result = run(
        dsn, "import", str(FIXTURES / "chatgpt-split"), "--format", "chatgpt", "--api-key", admin.api_key
    )
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert {k: report[k] for k in ("imported", "skipped", "failed", "messages")} == {
        "imported": 2, "skipped": 0, "failed": 0, "messages": 3
    }  # fmt: skip
    assert "import 100% [##############################]" in result.stderr
    assert "2 conversations  3 messages" in result.stderr
    again = report_of(
        run(
            dsn,
            "import",
            str(FIXTURES / "chatgpt-split"),
            "--format",
            "chatgpt",
            "--api-key",
            admin.api_key,
            "--quiet",
        )
    )
    assert (again["imported"], again["skipped"]) == (0, 2)
    titles = sorted(r["title"] for r in sql(loop, dsn, "SELECT title FROM conversation"))
    assert titles == ["First shard", "Second shard"]


def test_import_reads_the_export_zip(admin: Actor, dsn: str, tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(FIXTURES / "claude" / "conversations.json", "conversations.json")
        z.writestr("users.json", "[]")
    result = run(dsn, "import", str(archive), "--format", "claude", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 0, result.stderr
    assert (report_of(result)["imported"], report_of(result)["messages"]) == (2, 7)


def test_a_truncated_file_keeps_the_whole_conversations_and_says_where_it_broke(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    text = (FIXTURES / "chatgpt-split" / "conversations-000.json").read_text()
    complete = json.loads(text)[0]
    second = {**complete, "id": "second", "title": "Cut short"}
    body = "[\n" + json.dumps(complete) + ",\n" + json.dumps(second)
    cut = body[: len(body) - 40]
    path = tmp_path / "conversations.json"
    path.write_text(cut)
    result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 1
    report = report_of(result)
    assert (report["imported"], report["failed"]) == (1, 1)
    (failure,) = report["failures"]
    column = len(cut) - cut.rfind("\n")
    assert (
        failure["message"]
        == f"unexpected end of file inside a string at byte {len(cut)} (line 3, column {column})"
    )
    assert failure["file"] == str(path)
    assert [r["title"] for r in sql(loop, dsn, "SELECT title FROM conversation")] == ["First shard"]


def test_a_malformed_conversation_is_reported_with_its_position_and_the_rest_imported(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    good = (FIXTURES / "chatgpt-split" / "conversations-001.json").read_text().strip()[1:-1].strip()
    body = '[\n{"id": "broken", "title": tru},\n' + good + "\n]"
    path = tmp_path / "conversations.json"
    path.write_text(body)
    result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 1
    report = report_of(result)
    assert (report["imported"], report["failed"]) == (1, 1)
    (failure,) = report["failures"]
    assert (failure["index"], failure["offset"], failure["line"]) == (0, 2, 2)
    assert failure["message"] == "malformed JSON: Expecting value at byte 28 (line 2, column 27)"
    assert body.encode()[28:31] == b"tru"


def test_a_100_mb_message_keeps_its_first_part_and_says_the_rest_did_not_fit(
    admin: Actor, dsn: str, tmp_path: Path, loop: Loop
) -> None:
    """Issue 22 item 7: a message over THREADLINE_MESSAGE_MAX_BYTES no longer refuses its conversation; here
    its whole text (100 MB) is over THREADLINE_FILE_MAX_BYTES too, so only its first part is kept, reported."""
    conversation = json.loads((FIXTURES / "chatgpt-split" / "conversations-000.json").read_text())[0]
    conversation["mapping"]["m2"]["message"]["content"]["parts"] = ["@@HUGE@@"]
    head, tail = json.dumps([conversation]).split("@@HUGE@@")
    path = tmp_path / "conversations.json"
    with path.open("w") as f:
        f.write(head)
        chunk = "y" * (1 << 20)
        for _ in range(100):
            f.write(chunk)
        f.write(tail)
    result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert (report["imported"], report["failed"], report["messages"]) == (1, 0, 2)
    cid = conversation["id"]
    assert [w for w in report["warnings"] if "m2" in w] == [
        f"{cid}: message m2: 104857600 bytes, over the limit of 1048576 bytes (THREADLINE_MESSAGE_MAX_BYTES): its "
        "first 1048390 bytes are its text, the whole text the attached file message-m2.txt",
        f"{cid}: message m2: the whole text could not be stored as a file (104857600 bytes, over "
        "THREADLINE_FILE_MAX_BYTES)",
    ]
    (row,) = sql(loop, dsn, "SELECT content, parts FROM message WHERE import_key = 'm2'")
    assert row["parts"] is None
    assert (
        row["content"]
        == "y" * 1048390
        + "\n\n[cut: this message is 104,857,600 bytes, over the size limit; the rest could not be kept]"
    )
    # With a smaller per-conversation limit the oversized conversation is skipped without being held.
    small = run(
        dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet",
        env={"THREADLINE_IMPORT_ITEM_MAX_BYTES": str(8 << 20)},
    )  # fmt: skip
    (failure,) = report_of(small)["failures"]
    assert failure["message"] == f"element is {path.stat().st_size - 2} bytes; the limit is 8388608 bytes"


def test_import_refuses_bad_keys_and_read_only_targets(admin: Actor, make_user: Any, dsn: str) -> None:
    split = str(FIXTURES / "chatgpt-split" / "conversations-000.json")
    bad = run(dsn, "import", split, "--format", "chatgpt", "--api-key", "tlk_nope")
    assert (bad.returncode, bad.stderr.strip().splitlines()[-1]) == (2, "threadline: Invalid API key")
    viewer = make_user(admin)
    target = create_conversation(admin, "read only for them")
    join(admin, viewer, target, role="VIEWER")
    denied = run(
        dsn, "import", split, "--format", "chatgpt", "--api-key", viewer.api_key, "--conversation", target
    )
    assert (denied.returncode, denied.stderr.strip().splitlines()[-1]) == (
        2,
        "threadline: Only the conversation's owner (or a tenant admin) may do this",
    )
    unknown = run(dsn, "import", split, "--format", "gemini", "--api-key", admin.api_key)
    assert unknown.returncode == 2 and "invalid choice: 'gemini'" in unknown.stderr


def test_export_of_a_conversation_equals_the_api_export(
    admin: Actor, make_user: Any, dsn: str, tmp_path: Path
) -> None:
    conversation = branched_conversation(admin)
    out = tmp_path / "conversation.json"
    result = run(dsn, "export", "--conversation", conversation, "--out", str(out), "--api-key", admin.api_key)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "conversations": 1,
        "messages": 5,
        "out": str(out),
    }
    assert _normalised(json.loads(out.read_text())) == _normalised(export(admin, conversation))
    outsider = make_user(admin)
    denied = run(
        dsn,
        "export",
        "--conversation",
        conversation,
        "--out",
        str(tmp_path / "x.json"),
        "--api-key",
        outsider.api_key,
    )
    assert (denied.returncode, denied.stderr.strip().splitlines()[-1]) == (
        2,
        "threadline: Conversation not found",
    )
    assert not (tmp_path / "x.json").exists()


def test_operator_exports_everything_of_a_user_for_a_data_access_request(
    admin: Actor, make_user: Any, dsn: str, tmp_path: Path
) -> None:
    member = make_user(admin)
    own = create_conversation(member, "member's own")
    start_thread(member, own, "hello from member")
    out = tmp_path / "user.json"
    result = run(dsn, "export", "--user", member.user_id, "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["user"]["id"] == member.user_id
    assert [c["messages"][0]["content"] for c in data["conversations"]] == ["hello from member"]
    entries = admin.client.ok('{ auditLog(action: "user.export") { nodes { actorId targetId details } } }')
    assert entries["auditLog"]["nodes"] == [
        {
            "actorId": None,
            "targetId": member.user_id,
            "details": {"conversations": 1, "messages": 1, "authoredElsewhere": 0},
        }
    ]


@pytest.mark.parametrize("command", ["import", "export"])
def test_commands_have_help(command: str) -> None:
    result = subprocess.run([*THREADLINE, command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: threadline " + command in result.stdout
