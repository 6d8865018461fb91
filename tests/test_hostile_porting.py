"""Hostile input against erasure and imports (issue 12, items 5, 7, 13 and 15), through the public API."""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import create_conversation, join
from tests.harness import Actor, Loop, ServerThread, create_admin, test_settings
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import FIXTURES, sql
from threadline.ids import Kind, decode_id
from threadline.porting import erasure
from threadline.porting.threadline_format import EXPORT_VERSION

ERASE = "mutation($u: ID!) { userErase(userId: $u) { userId placeholder { id } } }"
PROFILE = """mutation { rateLimitProfileCreate(input: {name: "tight", requestsPerWindow: 50000}) { id } }"""
ASSIGN = (
    "mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) { requestsPerWindow } }"
)

# Tables keyed by a user: after erasure, no row of these may name the erased user (nor the placeholder,
# which would then collide with the next erased user's rows).
USER_KEYED = {
    "api_key": "user_id",
    "participant": "user_id",
    "invite": "user_id",
    "presence": "id",
    "typing_state": "user_id",
    "read_marker": "user_id",
    "rate_limit_bucket": "user_id",
    "rate_limit_assignment": "user_id",
}


# -- item 5: erasure covers everything keyed by a user --------------------------------------------------


def _busy_user(admin: Actor, make_user: Any, profile: str) -> Actor:
    """A member who made requests (so has rate-limit buckets), has presence and an assigned profile."""
    user = make_user(admin)
    user.client.ok("{ viewer { id } }")
    user.client.ok("mutation { presenceHeartbeat }")
    admin.client.ok(ASSIGN, {"u": user.user_id, "p": profile})
    return user


def test_erasing_users_one_after_another_erases_everything_keyed_by_them(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    profile = admin.client.ok(PROFILE)["rateLimitProfileCreate"]["id"]
    first, second = _busy_user(admin, make_user, profile), _busy_user(admin, make_user, profile)
    placeholder = admin.client.ok(ERASE, {"u": first.user_id})["userErase"]["placeholder"]["id"]
    # Before the fix the second erasure was INTERNAL: the first one had moved its buckets to the placeholder.
    assert admin.client.ok(ERASE, {"u": second.user_id})["userErase"]["userId"] == second.user_id

    ids = [decode_id(u, Kind.USER) for u in (first.user_id, second.user_id, placeholder)]
    left = {
        table: [
            r["n"]
            for r in sql(
                loop, dsn, f"SELECT count(*) AS n FROM {table} WHERE {column} = ANY($1::uuid[])", ids
            )
        ]
        for table, column in USER_KEYED.items()
    }
    assert left == {table: [0] for table in USER_KEYED}
    # The admin who erased them keeps their own budget.
    assert (
        sql(
            loop,
            dsn,
            "SELECT count(*) AS n FROM rate_limit_bucket WHERE user_id = $1",
            decode_id(admin.user_id, Kind.USER),
        )[0]["n"]
        > 0
    )


def test_every_reference_to_a_user_is_either_erased_or_anonymised_by_design(loop: Loop, dsn: str) -> None:
    """A new table keyed by a user must be classified in erasure (deleted, or attributed to the placeholder)."""
    rows = sql(
        loop,
        dsn,
        """SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
           FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.contype = 'f' AND c.confrelid = 'app_user'::regclass""",
    )
    references = {(r["tbl"].strip('"'), r["col"]) for r in rows}
    assert references == erasure.PERSONAL | erasure.ATTRIBUTED
    assert not erasure.PERSONAL & erasure.ATTRIBUTED
    assert {(t, c) for t, c in USER_KEYED.items()} <= erasure.PERSONAL


# -- item 13: imports into others' conversations, and self-reported usage ----------------------------------

IMPORT = """mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id tokenCount messageCount } }"""
USAGES = """query($c: ID!) { conversation(id: $c) { tokenCount messages(first: 50) { edges { node {
  content createdAt usage { promptTokens completionTokens totalTokens imported } } } } } }"""
POST = """mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }"""
SPEND = """{ insights(from: "2000-01-01T00:00:00Z", to: "2000-12-31T00:00:00Z") {
  tokenUsagePerDay { promptTokens completionTokens } } }"""


def backdated(external_id: str, prompt: int = 1_000_000, completion: int = 5_000_000) -> dict[str, Any]:
    """A Threadline export claiming huge usage, dated in the past."""
    at = "2000-06-01T12:00:00+00:00"
    return {
        "conversation_id": external_id,
        "metadata": {"export_version": EXPORT_VERSION},
        "conversation": {"title": "history", "created_at": at},
        "messages": [
            {"id": "q", "role": "user", "content": "question", "created_at": at},
            {
                "id": "a", "parent_id": "q", "role": "assistant", "content": "answer", "created_at": at,
                "tokens": {"prompt": prompt, "completion": completion},
            },
        ],
    }  # fmt: skip


def test_a_member_cannot_import_backdated_messages_into_someone_elses_conversation(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    theirs = create_conversation(admin, "the admin's")
    join(admin, member, theirs, role="MEMBER")
    refused = member.client.error(
        IMPORT, {"i": {"format": "THREADLINE", "data": backdated("x1"), "conversationId": theirs}}
    )
    assert refused["extensions"]["code"] == "FORBIDDEN"
    assert sql(loop, dsn, "SELECT count(*) AS n FROM message")[0]["n"] == 0
    assert sql(loop, dsn, "SELECT count(*) AS n FROM import_source")[0]["n"] == 0
    # Their own conversation is theirs to fill; a tenant admin may import into anyone's.
    mine = create_conversation(member, "the member's")
    done = member.client.ok(
        IMPORT, {"i": {"format": "THREADLINE", "data": backdated("x2"), "conversationId": mine}}
    )
    assert done["conversationImport"] == [{"id": mine, "tokenCount": 0, "messageCount": 2}]
    done = admin.client.ok(
        IMPORT, {"i": {"format": "THREADLINE", "data": backdated("x3"), "conversationId": mine}}
    )
    assert done["conversationImport"] == [{"id": mine, "tokenCount": 0, "messageCount": 4}]


def test_usage_from_files_is_shown_flagged_as_imported_and_never_counted_as_spend(
    admin: Actor, make_user: Any
) -> None:
    member = make_user(admin)
    imported = member.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": backdated("y1")}})[
        "conversationImport"
    ]
    conversation = imported[0]["id"]
    assert imported == [{"id": conversation, "tokenCount": 0, "messageCount": 2}]
    # Usage measured (or reported live) on this server still counts, next to the imported one.
    live = {"content": "live", "role": "ASSISTANT", "usage": {"promptTokens": 3, "completionTokens": 4}}
    member.client.ok(POST, {"c": conversation, "i": live})
    again = member.client.ok(
        IMPORT, {"i": {"format": "THREADLINE", "data": backdated("y2", 7, 8), "conversationId": conversation}}
    )
    assert again["conversationImport"][0]["tokenCount"] == 7

    read = member.client.ok(USAGES, {"c": conversation})["conversation"]
    assert read["tokenCount"] == 7
    usages = sorted(
        (e["node"]["content"], e["node"]["usage"] and tuple(e["node"]["usage"].values()))
        for e in read["messages"]["edges"]
    )
    assert usages == [
        ("answer", (7, 8, 15, True)),
        ("answer", (1_000_000, 5_000_000, 6_000_000, True)),
        ("live", (3, 4, 7, False)),
        ("question", None),
        ("question", None),
    ]
    # Spend insights over the backdated days see the messages but none of their self-reported tokens.
    days = member.client.ok(SPEND)["insights"]["tokenUsagePerDay"]
    assert {(d["promptTokens"], d["completionTokens"]) for d in days} == {(0, 0)}


# -- item 7: one import request is bounded, and pays by its size ------------------------------------------

IMPORT_REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) { imported messageCount } }"""
CAPS = {
    "import_api_max_conversations": 3,
    "import_api_max_messages": 10,
    "import_api_max_bytes": 20_000,
    "import_items_per_mutation": 4,
}


@pytest.fixture(scope="module")
def capped(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, **CAPS))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def importer(capped: ServerThread, loop: Loop, dsn: str) -> Iterator[Actor]:
    """A tenant admin calling the server with small import caps."""
    actor = create_admin(loop, dsn, capped.url)
    yield actor
    actor.client.close()


def document(external_id: str, messages: int = 1, text: str = "hello") -> dict[str, Any]:
    """A Threadline export of one thread of `messages` messages."""
    return {
        "conversation_id": external_id,
        "metadata": {"export_version": EXPORT_VERSION},
        "conversation": {"title": external_id},
        "messages": [
            {"id": f"m{i}", "parent_id": f"m{i - 1}" if i else None, "role": "user", "content": text}
            for i in range(messages)
        ],
    }


def _stored(loop: Loop, dsn: str) -> tuple[int, int]:
    row = sql(
        loop, dsn, "SELECT (SELECT count(*) FROM conversation) AS c, (SELECT count(*) FROM message) AS m"
    )[0]
    return row["c"], row["m"]


@pytest.mark.parametrize("mutation", [IMPORT, IMPORT_REPORT])
def test_an_import_request_over_a_cap_is_refused_whole_naming_the_limit(
    importer: Actor, loop: Loop, dsn: str, mutation: str
) -> None:
    cases = [
        # Four conversations, as an array and as a user export holding them in one item.
        ([document(f"c{i}") for i in range(4)], 3, "THREADLINE_IMPORT_API_MAX_CONVERSATIONS"),
        (
            {"conversations": [document(f"c{i}") for i in range(4)]},
            3,
            "THREADLINE_IMPORT_API_MAX_CONVERSATIONS",
        ),
        ([document("a", 6), document("b", 5)], 10, "THREADLINE_IMPORT_API_MAX_MESSAGES"),
        ([document("big", 2, "x" * 15_000)], 20_000, "THREADLINE_IMPORT_API_MAX_BYTES"),
    ]
    for data, limit, setting in cases:
        error = importer.client.error(mutation, {"i": {"format": "THREADLINE", "data": data}})
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert (error["extensions"]["limit"], error["extensions"]["setting"]) == (limit, setting)
        assert setting in error["message"] and "threadline import" in error["message"]
        assert _stored(loop, dsn) == (0, 0)
    # At the caps exactly, the import goes through.
    data = [document("a", 4), document("b", 3), document("c", 3)]
    importer.client.ok(mutation, {"i": {"format": "THREADLINE", "data": data}})
    assert _stored(loop, dsn) == (3, 10)


def test_an_import_draws_from_the_mutations_budget_by_its_size(
    importer: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    tight = importer.client.ok(
        'mutation { rateLimitProfileCreate(input: {name: "seven", mutationsPerWindow: 7, windowSeconds: 86400}) { id } }'
    )["rateLimitProfileCreate"]["id"]
    importer.client.ok(ASSIGN, {"u": importer.user_id, "p": tight})
    # 7 a day, 2 spent on the profile and its assignment: 5 left. 3 conversations + 9 messages = 12 items
    # cost 3 units of 4 items (2 left); the same again is refused (the mutation itself took 1: 1 left).
    first = [document(f"a{i}", 3) for i in range(3)]
    assert importer.client.ok(IMPORT_REPORT, {"i": {"format": "THREADLINE", "data": first}})["conversationImportReport"] == {
        "imported": 3, "messageCount": 9,
    }  # fmt: skip
    second = [document(f"b{i}", 3) for i in range(3)]
    response = importer.client.http.post(
        "/graphql",
        json={"query": IMPORT_REPORT, "variables": {"i": {"format": "THREADLINE", "data": second}}},
    )
    assert (response.status_code, response.headers["RateLimit-Limit"]) == (429, "7")
    assert int(response.headers["Retry-After"]) > 0
    refused = response.json()["errors"][0]["extensions"]
    assert (refused["code"], refused["budget"]) == ("RATE_LIMITED", "mutations")
    assert _stored(loop, dsn) == (3, 9)
    # A small import still fits in what is left (one unit: the mutation itself); nothing more does.
    importer.client.ok(IMPORT_REPORT, {"i": {"format": "THREADLINE", "data": [document("c0")]}})
    assert _stored(loop, dsn) == (4, 10)
    assert (
        importer.client.http.post("/graphql", json={"query": "mutation { presenceHeartbeat }"}).status_code
        == 429
    )


# -- item 15: zip bombs given to `threadline import` --------------------------------------------------------

CLAUDE = (FIXTURES / "claude" / "conversations.json").read_text()


def _import(dsn: str, admin: Actor, archive: Path, **env: str) -> Any:
    return run(
        dsn, "import", str(archive), "--format", "claude", "--api-key", admin.api_key, "--quiet", env=env
    )


def test_a_zip_bomb_is_refused_before_anything_is_imported(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    # Real conversations, then 64 MB of whitespace: ~64 KB of zip (a ratio near 1000).
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z, z.open("conversations.json", "w") as f:
        f.write(CLAUDE.rstrip()[:-1].encode() + b",")
        for _ in range(64):
            f.write(b" " * (1 << 20))
        f.write(b"{}]")
    assert archive.stat().st_size < 200_000
    result = _import(dsn, admin, archive)
    assert result.returncode == 2, result.stdout
    message = result.stderr.strip()
    assert message.startswith(f"threadline: {archive}:conversations.json expands ")
    assert message.endswith("the limit is a ratio of 100 (THREADLINE_IMPORT_ZIP_MAX_RATIO)")
    assert "Traceback" not in result.stderr
    assert _stored(loop, dsn) == (0, 0)


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


def test_entries_file_size_and_total_expansion_of_an_archive_are_capped_by_settings(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    many = _zip(tmp_path / "many.zip", {"conversations.json": CLAUDE, "a.txt": "a", "b.txt": "b"})
    result = _import(dsn, admin, many, THREADLINE_IMPORT_ZIP_MAX_MEMBERS="2")
    assert (result.returncode, result.stderr.strip()) == (
        2, f"threadline: {many}: 3 entries; the limit is 2 (THREADLINE_IMPORT_ZIP_MAX_MEMBERS)"
    )  # fmt: skip
    one = _zip(tmp_path / "one.zip", {"conversations.json": CLAUDE})
    result = _import(dsn, admin, one, THREADLINE_IMPORT_ZIP_MAX_MEMBER_BYTES="1000")
    assert (result.returncode, result.stderr.strip()) == (
        2, f"threadline: {one}:conversations.json expands to {len(CLAUDE)} bytes; the limit is 1000 "
        "(THREADLINE_IMPORT_ZIP_MAX_MEMBER_BYTES)"
    )  # fmt: skip
    split = _zip(tmp_path / "split.zip", {"conversations-000.json": CLAUDE, "conversations-001.json": CLAUDE})
    limit = str(len(CLAUDE) * 2 - 1)
    result = _import(dsn, admin, split, THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES=limit)
    assert (result.returncode, result.stderr.strip()) == (
        2, f"threadline: {split}: its export files expand to more than {limit} bytes (THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES)"
    )  # fmt: skip
    assert _stored(loop, dsn) == (0, 0)
    # Within the limits the same archive imports.
    result = _import(dsn, admin, split, THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES=str(len(CLAUDE) * 2))
    assert result.returncode == 0, result.stderr
    assert (report_of(result)["imported"], report_of(result)["skipped"]) == (2, 2)


def test_an_archive_whose_header_understates_a_file_is_refused_not_believed(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    archive = _zip(tmp_path / "liar.zip", {"conversations.json": CLAUDE})
    data = bytearray(archive.read_bytes())
    # The central directory's uncompressed size (offset 24 of the entry) claims 2 bytes: "[]".
    entry = data.index(b"PK\x01\x02")
    assert struct.unpack_from("<I", data, entry + 24)[0] == len(CLAUDE)
    struct.pack_into("<I", data, entry + 24, 2)
    archive.write_bytes(bytes(data))
    result = _import(dsn, admin, archive)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = report_of(result)
    assert report["imported"] == 0
    (failure,) = report["failures"]
    assert failure["message"].startswith("archive refused: Bad CRC-32 for file 'conversations.json'")
    assert _stored(loop, dsn) == (0, 0)
