"""`--format` (and the API's `format`) may be left out: the export format is told from the first
conversation's keys, reading a file only as far as it must (issue 22 items 8 and 9)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Actor, Loop
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import FIXTURES, fixture, sql
from threadline.porting import detect
from threadline.porting.model import ImportFormat

FORMATS = "one of threadline, chatgpt, claude, librechat, openwebui"
REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  format imported failed messageCount } }"""
THREADLINE_DOC = {
    "conversation_id": "cnv_x",
    "metadata": {
        "exported_at": "2026-01-01T00:00:00+00:00",
        "export_version": "1.0",
        "platform": "threadline",
    },
    "conversation": {"title": "Ours"},
    "messages": [],
}
USER_EXPORT = {"metadata": {"kind": "user"}, "user": {}, "conversations": [THREADLINE_DOC]}


class CountingStream(io.RawIOBase):
    """A file of `head` then `size` bytes of `filler`, produced as read (never held whole); counts bytes read."""

    def __init__(self, head: bytes, size: int, filler: bytes = b"a") -> None:
        self.head, self.left, self.filler, self.served = head, size, filler, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = 1 << 20 if n < 0 else n
        out = self.head[:n]
        self.head = self.head[len(out) :]
        body = min(n - len(out), self.left)
        self.left -= body
        out += (self.filler * (body // len(self.filler) + 1))[:body]
        self.served += len(out)
        return out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chatgpt/conversations.json", ImportFormat.CHATGPT),
        ("chatgpt-split/conversations-001.json", ImportFormat.CHATGPT),
        ("claude/conversations.json", ImportFormat.CLAUDE),
        ("merge/claude-v1.json", ImportFormat.CLAUDE),
        ("librechat/tree-v1.json", ImportFormat.LIBRECHAT),
        ("librechat/flat-v1.json", ImportFormat.LIBRECHAT),
        ("openwebui/chats-v1.json", ImportFormat.OPENWEBUI),
    ],
)
def test_every_fixture_is_recognised_from_the_file_and_from_its_value(
    name: str, expected: ImportFormat
) -> None:
    path = FIXTURES / name
    with path.open("rb") as f:
        assert detect.detect_stream(f) is expected
    assert detect.detect_value(json.loads(path.read_text())) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (THREADLINE_DOC, ImportFormat.THREADLINE),
        ([THREADLINE_DOC], ImportFormat.THREADLINE),
        (USER_EXPORT, ImportFormat.THREADLINE),
        ({"conversationId": "x", "messages": []}, ImportFormat.LIBRECHAT),
        ([{"id": "c", "title": "t", "chat": {}}], ImportFormat.OPENWEBUI),
        # A signature key decides only at the conversation's own level, never inside a value.
        ({"title": {"mapping": 1, "chat": 2}, "name": ["uuid"], "chat_messages": []}, ImportFormat.CLAUDE),
    ],
)
def test_documents_of_each_format_are_recognised(value: Any, expected: ImportFormat) -> None:
    raw = b"\xef\xbb\xbf \n" + json.dumps(value, indent=1).encode()  # a BOM and white space first
    assert detect.detect_stream(io.BytesIO(raw)) is expected
    assert detect.detect_value(value) is expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "the file is empty"),
        (b"  ", "the file is empty"),
        (b"[]", "the file holds an empty array: no conversation"),
        (b"[1, 2]", "the array's first element is not an object"),
        (b'"text"', "the file is not a JSON object or array"),
        (
            b'{"title": "x", "messages": []}',
            "no key of the first conversation is known (keys: title, messages)",
        ),
        (b'[{"title": "x"}, {"mapping": {}}]', "no key of the first conversation is known (keys: title)"),
        (b'{"title": "x", "id": 1', "the file ends inside the first conversation (keys: title, id)"),
        (b'{"title": "never closed', "the file ends inside a string"),
    ],
)
def test_unknown_files_are_refused_saying_why_and_what_to_do(raw: bytes, why: str) -> None:
    with pytest.raises(detect.UnknownFormat) as caught:
        detect.detect_stream(io.BytesIO(raw))
    assert str(caught.value) == f"cannot tell the export format: {why}; name the format ({FORMATS})"


def test_detection_reads_only_the_start_of_a_huge_file() -> None:
    # 200 MB after the deciding key: one 64 KiB chunk is read.
    stream = CountingStream(b'[{"title": "Big", "create_time": 1.0, "mapping": {"x": "', 200 * 1024 * 1024)
    assert detect.detect_stream(stream) is ImportFormat.CHATGPT
    assert stream.served <= 64 * 1024


def test_detection_gives_up_at_its_byte_bound_on_a_file_without_a_known_key() -> None:
    # A 200 MB string value before any key of a format: refused after the bound, not read to the end.
    stream = CountingStream(b'{"title": "', 200 * 1024 * 1024)
    with pytest.raises(detect.UnknownFormat) as caught:
        detect.detect_stream(stream, max_bytes=2 * 1024 * 1024)
    assert str(caught.value) == (
        f"cannot tell the export format: no known key in the first 2097152 bytes; name the format ({FORMATS})"
    )
    assert stream.served == 2 * 1024 * 1024
    # Many small values: the same bound.
    many = CountingStream(b'{"a": [', 50 * 1024 * 1024, b"1,")
    with pytest.raises(detect.UnknownFormat):
        detect.detect_stream(many, max_bytes=1024 * 1024)
    assert many.served == 1024 * 1024


def test_escaped_quotes_and_long_keys_do_not_confuse_the_scanner() -> None:
    raw = b'{"title": "say \\"mapping\\": \\\\", "' + b"k" * 100_000 + b'": 1, "uuid": "u"}'
    assert detect.detect_stream(io.BytesIO(raw)) is ImportFormat.CLAUDE


def test_api_import_without_format_reports_the_detected_one(admin: Actor) -> None:
    done = admin.client.ok(REPORT, {"i": {"data": fixture("claude/conversations.json")}})
    assert done["conversationImportReport"] == {
        "format": "CLAUDE",
        "imported": 2,
        "failed": 0,
        "messageCount": 7,
    }
    given = admin.client.ok(
        REPORT, {"i": {"format": "CHATGPT", "data": fixture("chatgpt-split/conversations-000.json")}}
    )
    assert given["conversationImportReport"]["format"] == "CHATGPT"


def test_api_import_of_unknown_data_without_format_is_bad_user_input(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    error = admin.client.error(REPORT, {"i": {"data": [{"title": "x", "messages": []}]}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == (
        "cannot tell the export format: no key of the first conversation is known (keys: title, messages); "
        f"name the format ({FORMATS})"
    )
    assert sql(loop, dsn, "SELECT count(*) AS n FROM conversation")[0]["n"] == 0


def test_cli_detects_each_file_and_refuses_unknown_or_mixed_files(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    split = run(dsn, "import", str(FIXTURES / "chatgpt-split"), "--api-key", admin.api_key, "--quiet")
    assert split.returncode == 0, split.stderr
    assert (report_of(split)["format"], report_of(split)["imported"]) == ("chatgpt", 2)

    unknown = tmp_path / "notes.json"
    unknown.write_text('{"title": "x", "body": "hello"}')
    refused = run(dsn, "import", str(unknown), "--api-key", admin.api_key, "--quiet")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"threadline: {unknown}: cannot tell the export format: no key of the first conversation is known "
        f"(keys: title, body); name the format ({FORMATS}) with --format"
    )
    claude = FIXTURES / "claude" / "conversations.json"
    openwebui = FIXTURES / "openwebui" / "chats-v1.json"
    mixed = run(dsn, "import", str(claude), str(openwebui), "--api-key", admin.api_key, "--quiet")
    assert mixed.returncode == 2
    assert mixed.stderr.strip() == (
        f"threadline: the files are of different formats ({claude} is claude, {openwebui} is openwebui): import "
        "them separately"
    )
    assert refused.stdout == mixed.stdout == ""
