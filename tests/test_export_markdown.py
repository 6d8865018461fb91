"""Markdown export: conversationExport(id, format: MARKDOWN) and `threadline export --format markdown`, the
reader's current branch of each thread by default, every branch on request, links at the top."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor
from tests.test_porting_cli import run

MARKDOWN = """query($id: ID!, $all: Boolean) {
  conversationExport(id: $id, format: MARKDOWN, allBranches: $all) }"""
SET_CURRENT = "mutation($r: ID!, $m: ID!) { threadSetCurrent(rootId: $r, messageId: $m) { id } }"
LINK = """mutation($f: ID!, $t: ID!) { conversationLink(fromId: $f, toId: $t, kind: CONTINUES) { id } }"""
DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


def markdown(actor: Actor, conversation_id: str, all_branches: bool = False) -> str:
    text = actor.client.ok(MARKDOWN, {"id": conversation_id, "all": all_branches})["conversationExport"]
    assert isinstance(text, str)
    return TIME.sub("<time>", text)


def trip(actor: Actor) -> tuple[str, dict[str, str]]:
    """A conversation with two threads; the first has two branches (Lisbon, then the newer Porto)."""
    cid = create_conversation(actor, "Trip plans", tags=["travel"], description="Where to go in May.")
    ids = {"root": start_thread(actor, cid, "Where should we go?")}
    ids["lisbon"] = reply(actor, ids["root"], "Lisbon.", "ASSISTANT")
    ids["flights"] = reply(actor, ids["lisbon"], "Book the flights.")
    ids["porto"] = reply(actor, ids["root"], "Porto.", "ASSISTANT")
    ids["second"] = start_thread(actor, cid, "Packing list?")
    return cid, ids


def test_markdown_shows_the_callers_current_branch_of_each_thread(admin: Actor) -> None:
    cid, ids = trip(admin)
    name = admin.client.ok("{ viewer { displayName } }")["viewer"]["displayName"]
    # The reply the caller wrote last (Porto) is the branch they are on. Writers by display name.
    assert markdown(admin, cid) == (
        "# Trip plans\n\n"
        "Where to go in May.\n\n"
        f"- **Conversation:** `{cid}`\n"
        "- **Created:** <time>; **last activity:** <time>\n"
        "- **Tags:** travel\n"
        "- **Exported:** <time>, showing the current branch of each thread\n\n"
        "## Thread 1\n\n"
        f"### User ({name}) · <time>\n\nWhere should we go?\n\n"
        "### Assistant · <time>\n\nPorto.\n\n"
        "## Thread 2\n\n"
        f"### User ({name}) · <time>\n\nPacking list?\n"
    )
    # Chosen with threadSetCurrent (issue 16's per-user current leaf): that branch instead.
    admin.client.ok(SET_CURRENT, {"r": ids["root"], "m": ids["flights"]})
    text = markdown(admin, cid)
    assert "Lisbon." in text and "Book the flights." in text
    assert "Porto." not in text


def test_each_reader_gets_their_own_current_branch(admin: Actor, make_user: Callable[..., Actor]) -> None:
    cid, ids = trip(admin)
    member = make_user(admin)
    join(admin, member, cid, "VIEWER")
    member.client.ok(SET_CURRENT, {"r": ids["root"], "m": ids["lisbon"]})
    assert "Lisbon." in markdown(member, cid) and "Porto." not in markdown(member, cid)
    assert "Porto." in markdown(admin, cid) and "Lisbon." not in markdown(admin, cid)


def test_all_branches_numbers_messages_by_their_place_in_the_tree(admin: Actor) -> None:
    cid, ids = trip(admin)
    admin.client.ok(DELETE, {"id": ids["flights"]})
    text = markdown(admin, cid, all_branches=True)
    name = admin.client.ok("{ viewer { displayName } }")["viewer"]["displayName"]
    body = text[text.index("## Thread 1") :].replace(f"User ({name})", "User")
    assert body == (
        "## Thread 1\n\n"
        "### 1 User · <time>\n\nWhere should we go?\n\n"
        "### 1.1 Assistant · <time>\n\nLisbon.\n\n"
        "### 1.1.1 User · <time>\n\n_This message was deleted._\n\n"
        "### 1.2 Assistant · <time>\n\n_In reply to 1._\n\nPorto.\n\n"
        "## Thread 2\n\n"
        "### 1 User · <time>\n\nPacking list?\n"
    )
    assert "showing every branch of each thread" in text


def test_links_the_reader_may_see_are_listed(admin: Actor, make_user: Callable[..., Actor]) -> None:
    cid, _ = trip(admin)
    earlier = create_conversation(admin, "Last year's trip")
    admin.client.ok(LINK, {"f": cid, "t": earlier})
    text = markdown(admin, cid)
    assert f"## Linked conversations\n\n- Continues **Last year's trip** (`{earlier}`)\n" in text
    assert f"- Continued by **Trip plans** (`{cid}`)" in markdown(admin, earlier)
    # A participant who cannot read the other conversation does not see the link.
    member = make_user(admin)
    join(admin, member, cid, "VIEWER")
    assert "Linked conversations" not in markdown(member, cid)


def test_markdown_export_of_an_unreadable_conversation_is_not_found(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    cid, _ = trip(admin)
    stranger = make_user(admin)
    assert stranger.client.code(MARKDOWN, {"id": cid}) == "NOT_FOUND"


def test_the_cli_writes_the_same_markdown(admin: Actor, dsn: str, tmp_path: Path) -> None:
    cid, _ = trip(admin)
    for extra, all_branches in (([], False), (["--all-branches"], True)):
        out = tmp_path / f"trip-{all_branches}.md"
        result = run(
            dsn, "export", "--conversation", cid, "--format", "markdown", *extra, "--out", str(out),
            "--api-key", admin.api_key,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert TIME.sub("<time>", out.read_text()) == markdown(admin, cid, all_branches)
    # The operator (no API key) sees the newest branch of each thread.
    out = tmp_path / "operator.md"
    assert (
        run(dsn, "export", "--conversation", cid, "--format", "markdown", "--out", str(out)).returncode == 0
    )
    assert "Porto." in out.read_text() and "Lisbon." not in out.read_text()
    refused = run(dsn, "export", "--user", admin.user_id, "--format", "markdown", "--out", str(out))
    assert refused.returncode == 2
    assert "--format markdown exports one conversation" in refused.stderr
