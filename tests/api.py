"""GraphQL documents and small helpers shared by the API tests (auth, conversations, access, threads)."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.harness import Actor, Loop

CREATE = """mutation($i: ConversationCreateInput!) {
  conversationCreate(input: $i) { id title status tags messageCount } }"""
START = "mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }"
REPLY = "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }"
INVITE = """mutation($c: ID!, $u: ID!, $r: ParticipantRole) {
  participantInvite(conversationId: $c, userId: $u, role: $r) { id role status } }"""
ACCEPT = "mutation($i: ID!) { inviteAccept(id: $i) { id role user { id } } }"
CONVERSATION = """query($id: ID!) { conversation(id: $id) {
  id title description tags status messageCount lastActivityAt } }"""


def create_conversation(actor: Actor, title: str = "talk", **fields: Any) -> str:
    return str(actor.client.ok(CREATE, {"i": {"title": title, **fields}})["conversationCreate"]["id"])


def message_input(content: str, role: str | None) -> dict[str, Any]:
    return {"content": content, **({"role": role} if role else {})}


def start_thread(actor: Actor, conversation_id: str, content: str = "root", role: str | None = None) -> str:
    return str(
        actor.client.ok(START, {"c": conversation_id, "i": message_input(content, role)})["threadStart"]["id"]
    )


def reply(actor: Actor, parent_id: str, content: str = "reply", role: str | None = None) -> str:
    return str(
        actor.client.ok(REPLY, {"p": parent_id, "i": message_input(content, role)})["messageReply"]["id"]
    )


def stream_cursor(actor: Actor) -> str:
    """Where the caller's streams stand now (an opaque cursor for `since`)."""
    return str(actor.client.ok("{ streamCursor }")["streamCursor"])


def join(owner: Actor, user: Actor, conversation_id: str, role: str = "MEMBER") -> None:
    """`owner` invites `user` with `role` and `user` accepts."""
    invite = owner.client.ok(INVITE, {"c": conversation_id, "u": user.user_id, "r": role})[
        "participantInvite"
    ]
    user.client.ok(ACCEPT, {"i": invite["id"]})


# Tables whose rows the API writes (the event log is left out: reads never write it, and streaming owns it).
WRITTEN_TABLES = (
    "tenant",
    "app_user",
    "api_key",
    "conversation",
    "participant",
    "invite",
    "message",
    "thread",
    "message_edit",
    "read_marker",
    "message_chunk",
    "run",
    "run_step",
    "message_stream",
    "audit_log",
    "import_source",
    "message_attachment",
)


def snapshot(loop: Loop, dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables the API writes, to prove that a failed call changed nothing."""

    async def read() -> dict[str, list[tuple[Any, ...]]]:
        conn = await asyncpg.connect(dsn)
        try:
            out = {}
            for table in WRITTEN_TABLES:
                rows = await conn.fetch(f'SELECT * FROM "{table}" ORDER BY id')
                out[table] = [tuple(r.values()) for r in rows]
            return out
        finally:
            await conn.close()

    return loop.run(read())


def count_rows(loop: Loop, dsn: str, table: str) -> int:
    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))
        finally:
            await conn.close()

    return loop.run(read())
