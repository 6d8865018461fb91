"""The typed event contract (issue 13 item 1) changed no byte of what is logged or sent.

Services publish typed payloads (events.payloads); events.stored writes them in the JSON shape the log has
always had, which the generated `stream_event.message_id` column and events.scrub read, and which rows
logged before the change keep. So: every kind a live workload publishes is stored with exactly its old keys
and reads back losslessly, and rows in the older shapes (optional keys missing) replay as they always did.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tests.api import create_conversation, join, reply, start_thread, stream_cursor
from tests.harness import Actor, Loop, ServerThread
from tests.ws import WsClient

# The stored keys of each kind, as services wrote them before payloads were typed.
SNAPSHOT_KEYS = {
    "id", "conversationId", "rootId", "parentId", "depth", "path", "childCount", "role", "content", "authorId",
    "model", "promptTokens", "completionTokens", "createdAt", "editedAt", "deletedAt", "usageImported",
}  # fmt: skip
STORED_KEYS = {
    "thread.new": {"message", "replyCount", "lastActivityAt"},
    "thread.activity": {"action", "message", "replyCount", "lastActivityAt"},
    "message.delta": {"messageId", "runId", "attempt", "index", "delta"},
    "message.done": {"messageId", "runId", "usage"},
    "presence.update": {"userId", "status", "lastSeenAt"},
    "typing.update": {"userId", "isTyping"},
    "unread.update": {"unreadCount"},
    "membership.changed": {"userId", "change", "role"},
    "principal.changed": {"userId", "reason"},
    "branch.sibling": {"parentId", "siblingId", "siblingIndex", "siblingCount"},
    "branch.current": {"leafId", "reason"},
}
# Published by background workers whenever they get to it (the first exchange queues enrichment jobs): their
# shape is checked when they are there, their presence is not (tests/test_enrichment.py covers them).
BACKGROUND_KEYS = {"enrichment.job": {"kind", "status"}}

EVENTS = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
  type rootId
  ... on ThreadNewEvent { thread { id replyCount unreadCount lastActivityAt root { id parentId path depth content
      role model usage { promptTokens completionTokens totalTokens imported } isDeleted editedAt } } }
  ... on ThreadActivityEvent { replyCount action changedMessage { id content isDeleted deletedAt } }
  ... on MessageDeltaEvent { messageId runId index delta attempt }
  ... on MessageDoneEvent { messageId runId usage { promptTokens completionTokens totalTokens } }
  ... on StreamErrorEvent { code message }
} }"""


def _rows(loop: Loop, dsn: str, tenant: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(
                "SELECT type, payload::text AS payload, message_id FROM stream_event WHERE tenant_id = $1 ORDER BY id",
                uuid.UUID(hex=tenant[4:]),
            )
        finally:
            await conn.close()

    return loop.run(run())


def test_every_kind_a_service_publishes_keeps_its_stored_shape_and_reads_back_losslessly(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, loop: Loop, dsn: str
) -> None:
    import json

    from threadline.events.stored import decode, encode

    member = make_user(admin)
    gone = make_user(admin)
    cid = create_conversation(admin)
    join(admin, member, cid)  # membership.changed JOINED
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRoleSet(conversationId: $c, userId: $u, role: VIEWER) { id } }",
        {"c": cid, "u": member.user_id},
    )
    root = start_thread(admin, cid, "root")  # thread.new, unread.update
    answer = reply(admin, root, "...", role="ASSISTANT")  # thread.activity REPLY
    admin.client.ok('mutation($m: ID!) { messageAppend(id: $m, delta: "hel") { id } }', {"m": answer})
    admin.client.ok(
        "mutation($m: ID!) { messageFinish(id: $m, usage: {promptTokens: 3, completionTokens: 4}) { id } }",
        {"m": answer},
    )
    edited = reply(admin, root, "draft")
    admin.client.ok('mutation($m: ID!) { messageEdit(id: $m, content: "final") { id } }', {"m": edited})
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": edited})
    member.client.ok("mutation($r: ID!) { threadMarkRead(rootId: $r) { id } }", {"r": root})
    admin.client.ok("mutation($c: ID!) { typingSet(conversationId: $c, isTyping: true) }", {"c": cid})
    admin.client.ok("mutation { presenceHeartbeat(status: AWAY) }")
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }",
        {"c": cid, "u": member.user_id},
    )
    key = admin.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "spare") { apiKey { id } } }',
        {"u": member.user_id},
    )["apiKeyCreate"]["apiKey"]["id"]
    admin.client.ok("mutation($k: ID!) { apiKeyRevoke(id: $k) { id } }", {"k": key})  # principal.changed
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": gone.user_id})

    rows = _rows(loop, dsn, admin.tenant_id)
    seen = set()
    for row in rows:
        stored = json.loads(row["payload"])
        kind = row["type"]
        expected = STORED_KEYS.get(kind) or BACKGROUND_KEYS[kind]
        if kind not in BACKGROUND_KEYS:
            seen.add(kind)
        if kind == "principal.changed" and stored.get("reason") == "erased":
            expected = {"reason"}  # an erasure names nobody, not even with a null key
        assert set(stored) == expected, (kind, stored)
        if "message" in stored:
            assert set(stored["message"]) == SNAPSHOT_KEYS, stored
        assert encode(decode(kind, stored)) == stored, kind
        # The generated column still finds the message whose content the event carries (events.scrub).
        carried = (
            stored.get("messageId") if kind == "message.delta" else (stored.get("message") or {}).get("id")
        )
        if kind in ("thread.new", "thread.activity", "message.delta"):
            assert row["message_id"] == uuid.UUID(hex=carried[4:])
        else:
            assert row["message_id"] is None
    assert seen == set(STORED_KEYS), seen ^ set(STORED_KEYS)


def _publish_legacy(
    loop: Loop, server: ServerThread, tenant: str, conversation: str, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """Logs payloads in older shapes through the real publisher (its locks keep the hub's order safe)."""
    from threadline.db import Database
    from threadline.events.kinds import EventType
    from threadline.events.publish import publish

    async def run() -> None:
        db = await Database.connect(server.app.state.services.settings.database_url, 1, 1)
        try:
            async with db.transaction() as tx:
                for kind, payload in events:
                    await publish(
                        tx,
                        uuid.UUID(hex=tenant[4:]),
                        EventType(kind),
                        conversation_id=uuid.UUID(hex=conversation[4:]),
                        root_id=uuid.UUID(hex=payload.pop("_root")[4:]),
                        payload=payload,
                    )
        finally:
            await db.close()

    loop.run(run())


def test_events_logged_in_older_shapes_replay_as_they_always_did(
    admin: Actor, server: ServerThread, loop: Loop
) -> None:
    cid = create_conversation(admin)
    since = stream_cursor(admin)
    root, other = f"msg_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC).isoformat()
    old_snapshot = {  # before usageImported, with no author (an erased one)
        "id": root, "conversationId": cid, "rootId": root, "parentId": None, "depth": 0, "path": [root],
        "childCount": 0, "role": "USER", "content": "old root", "model": None, "promptTokens": None,
        "completionTokens": None, "createdAt": at, "editedAt": None, "deletedAt": None,
    }  # fmt: skip
    _publish_legacy(
        loop,
        server,
        admin.tenant_id,
        cid,
        [
            ("thread.new", {"_root": root, "message": old_snapshot, "lastActivityAt": at}),  # no replyCount
            (
                "thread.activity",
                {
                    "_root": root,
                    "message": {
                        **old_snapshot,
                        "id": other,
                        "path": [root, other],
                        "parentId": root,
                        "depth": 1,
                        "content": "",
                        "deletedAt": at,
                    },
                    "replyCount": 1,
                    "lastActivityAt": at,
                },
            ),  # fmt: skip
            (
                "message.delta",
                {"_root": root, "messageId": other, "runId": None, "index": 0, "delta": "hi"},
            ),  # no attempt
            ("message.done", {"_root": root, "messageId": other, "usage": {"promptTokens": 2}}),  # no runId
            ("error", {"_root": root, "code": "FAILED"}),  # no message, runId or messageId
        ],
    )
    client = WsClient(server.ws_url, admin.api_key)
    try:
        client.subscribe(EVENTS, {"c": cid, "s": since})
        got = client.events(5, ignore=("presence.update",))
    finally:
        client.close()
    assert got == [
        {
            "type": "thread.new",
            "rootId": root,
            "thread": {
                "id": "thr_" + root[4:],
                "replyCount": 0,
                "unreadCount": 1,
                "lastActivityAt": at,
                "root": {
                    "id": root,
                    "parentId": None,
                    "path": [root],
                    "depth": 0,
                    "content": "old root",
                    "role": "USER",
                    "model": None,
                    "usage": None,
                    "isDeleted": False,
                    "editedAt": None,
                },  # fmt: skip
            },
        },
        {
            "type": "thread.activity",
            "rootId": root,
            "replyCount": 1,
            "action": "REPLY",
            "changedMessage": {"id": other, "content": "", "isDeleted": True, "deletedAt": at},
        },
        {
            "type": "message.delta",
            "rootId": root,
            "messageId": other,
            "runId": None,
            "index": 0,
            "delta": "hi",
            "attempt": 1,
        },
        {
            "type": "message.done",
            "rootId": root,
            "messageId": other,
            "runId": None,
            "usage": {"promptTokens": 2, "completionTokens": 0, "totalTokens": 2},
        },
        {"type": "error", "rootId": root, "code": "FAILED", "message": ""},
    ]
