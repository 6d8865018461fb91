"""A conversation id that comes more than once in one input (issue 22): the first copy is imported; a later copy
is skipped and counted so, quietly when it is the same (an export split over several files repeats conversations
whole), with a warning when it differs. Before, two differing copies were written into one conversation, and every
re-import of the input recorded the other copy's text as an edit again."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.harness import Actor
from tests.test_import_bulk import node
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import IMPORT, IMPORT_REPORT

READ = """query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node { content edits { content } } } } } }"""


def _claude(ident: str, text: str) -> dict[str, Any]:
    return {
        "uuid": ident,
        "name": ident,
        "chat_messages": [{"uuid": f"{ident}-q", "sender": "human", "text": text}],
    }


def _chatgpt(ident: str, answer: str) -> dict[str, Any]:
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": [f"{ident}-u"]},
        f"{ident}-u": node(f"{ident}-u", "root", [f"{ident}-a"], "user", "the question", 1_700_000_000.0),
        f"{ident}-a": node(f"{ident}-a", f"{ident}-u", [], "assistant", answer, 1_700_000_001.0),
    }
    return {
        "id": ident,
        "conversation_id": ident,
        "title": ident,
        "create_time": 1_700_000_000.0,
        "update_time": 1_700_000_001.0,
        "mapping": mapping,
        "current_node": f"{ident}-a",
    }


def _contents(admin: Actor, conversation_id: str) -> list[tuple[str, list[Any]]]:
    edges = admin.client.ok(READ, {"c": conversation_id})["conversation"]["messages"]["edges"]
    return [(e["node"]["content"], e["node"]["edits"]) for e in edges]


def test_a_differing_copy_in_an_api_input_is_skipped_with_a_warning_and_re_imports_add_no_edit(
    admin: Actor,
) -> None:
    ident = f"twice-{uuid.uuid4()}"
    same = f"same-{uuid.uuid4()}"
    data = [
        _claude(ident, "first text"),
        _claude(same, "kept"),
        _claude(ident, "second text"),
        _claude(same, "kept"),
    ]
    reports = [admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}}) for _ in range(3)]
    first = reports[0]["conversationImportReport"]
    assert (first["imported"], first["skipped"], first["failed"]) == (2, 2, 0), first
    assert first["warnings"] == [
        f"conversation {ident} comes again in the input, not the same as before: only its first copy is imported"
    ]
    by_title = {c["title"]: c["id"] for c in first["conversations"]}
    assert sorted(by_title) == sorted([ident, same])
    for later in reports[1:]:
        report = later["conversationImportReport"]
        # Both unchanged since the first import, both repeats skipped again; the warning says so again.
        assert (report["imported"], report["skipped"], report["failed"]) == (0, 4, 0), report
        assert report["warnings"] == first["warnings"]
        assert sorted(c["id"] for c in report["conversations"]) == sorted(by_title.values())
    assert _contents(admin, by_title[ident]) == [("first text", [])]
    assert _contents(admin, by_title[same]) == [("kept", [])]


def test_repeated_conversations_of_a_chatgpt_file_through_the_cli(
    admin: Actor, dsn: str, tmp_path: Path
) -> None:
    """The CLI reads ChatGPT files lazily (each item's bytes fingerprinted, decoded only when needed): a repeat
    whole is skipped quietly, a differing one with the warning, and a re-import changes nothing."""
    ident, same = f"gpt-{uuid.uuid4()}", f"gpt-{uuid.uuid4()}"
    path = tmp_path / "repeated.json"
    path.write_text(
        json.dumps(
            [
                _chatgpt(ident, "the first answer"),
                _chatgpt(same, "kept"),
                _chatgpt(same, "kept"),
                _chatgpt(ident, "another answer"),
            ]
        )  # fmt: skip
    )
    warning = f"conversation {ident} comes again in the input, not the same as before: only its first copy is imported"
    args = ("import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
    result = run(dsn, *args)
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert (report["imported"], report["skipped"], report["merged"], report["failed"]) == (2, 2, 0, 0), report
    assert report["warnings"] == [warning]
    again = report_of(run(dsn, *args))
    assert (again["imported"], again["skipped"], again["merged"], again["messagesUpdated"]) == (0, 4, 0, 0), (
        again
    )
    assert again["warnings"] == [warning]
    listed = admin.client.ok(
        "query($q: String!) { search(input: {query: $q, first: 5}) { edges { node { conversation { id title } } } } }",
        {"q": "answer"},
    )
    titles = {
        e["node"]["conversation"]["title"]: e["node"]["conversation"]["id"] for e in listed["search"]["edges"]
    }
    assert _contents(admin, titles[ident]) == [("the question", []), ("the first answer", [])]


def test_a_threadline_user_export_repeating_a_conversation(admin: Actor) -> None:
    """A user export holds several conversations in one item: its copies are told apart by what was read, not by
    the rows planned from it (new ids each time), so the same one twice is skipped quietly."""
    ident = f"tl-{uuid.uuid4()}"
    (source,) = admin.client.ok(
        IMPORT, {"i": {"format": "CLAUDE", "data": [_claude(ident, "exported text")]}}
    )["conversationImport"]
    doc = admin.client.ok("query($c: ID!) { conversationExport(id: $c) }", {"c": source["id"]})[
        "conversationExport"
    ]
    doc["conversation_id"] = f"copy-{uuid.uuid4()}"
    changed = json.loads(json.dumps(doc))
    changed["conversation"]["title"] = "another title"
    for data, skipped, warned in (
        ({"conversations": [doc, doc]}, 1, False),
        ({"conversations": [doc, changed]}, 2, True),
    ):
        report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "THREADLINE", "data": data}})[
            "conversationImportReport"
        ]
        assert (report["skipped"], report["failed"]) == (skipped, 0), report
        warning = f"conversation {doc['conversation_id']} comes again in the input, not the same as before"
        assert any(w.startswith(warning) for w in report["warnings"]) is warned, report
