"""Presence (ONLINE/AWAY/OFFLINE per user) and typing indicators, both expiring on silence."""

from __future__ import annotations

import uuid
from datetime import datetime

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database, Executor
from threadline.errors import bad_input, not_found
from threadline.events.announce import publish_presence_update, publish_typing_update
from threadline.events.payloads import PresenceUpdate, TypingUpdate
from threadline.presence import repository as repo
from threadline.settings import Settings
from threadline.threads import repository as threads

STATUSES = {"ONLINE", "AWAY", "OFFLINE"}


async def _announce_presence(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, status: str, last_seen_at: datetime
) -> None:
    # One row for any number of conversations: the hub scopes it to each conversation the user is in.
    await publish_presence_update(tx, tenant_id, PresenceUpdate(user_id, status, last_seen_at))


async def heartbeat(db: Database, tenant_id: uuid.UUID, user_id: uuid.UUID, status: str) -> None:
    """Record a sign of life; announce only when the status changes (heartbeats themselves are silent)."""
    if status not in STATUSES:
        raise bad_input(f"status must be one of {sorted(STATUSES)}", argument="status")
    async with db.transaction() as tx:
        previous = await repo.presence_status(tx, tenant_id, user_id)
        last_seen_at = await repo.record_presence(tx, tenant_id, user_id, status)
        if previous != status:
            await _announce_presence(tx, tenant_id, user_id, status, last_seen_at)


async def expire_presence(db: Database, settings: Settings) -> int:
    """Users silent for longer than the presence timeout go OFFLINE (safe to run in every process)."""
    async with db.transaction() as tx:
        rows = await repo.expire_presence(tx, settings.presence_timeout_seconds)
        for row in rows:
            await _announce_presence(tx, row["tenant_id"], row["id"], "OFFLINE", row["last_seen_at"])
    return len(rows)


async def _announce_typing(
    tx: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID | None,
    user_id: uuid.UUID,
    typing: bool,
) -> None:
    await publish_typing_update(
        tx, tenant_id, TypingUpdate(user_id, typing), conversation_id=conversation_id, root_id=root_id
    )


async def set_typing(
    db: Database,
    settings: Settings,
    principal: Principal,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID | None,
    typing: bool,
) -> bool:
    """Start (or renew) or stop the caller's typing indicator; only changes are announced."""
    async with db.transaction() as tx:
        conversation = await require(tx, principal, conversation_id, Access.WRITE)
        if typing:
            # No one writes to an ARCHIVED or DELETED conversation, so no one is typing in it (stopping is fine).
            require_writable(conversation)
        if root_id is not None:
            if await threads.thread_conversation(tx, principal.tenant_id, root_id) != conversation_id:
                raise not_found("Thread")
        if typing:
            prev = await repo.typing_state(tx, principal.tenant_id, conversation_id, principal.user_id)
            await repo.start_typing(
                tx,
                principal.tenant_id,
                conversation_id,
                principal.user_id,
                root_id,
                settings.typing_timeout_seconds,
            )
            if prev is None or not prev["active"] or prev["root_id"] != root_id:
                await _announce_typing(
                    tx, principal.tenant_id, conversation_id, root_id, principal.user_id, True
                )
        else:
            row = await repo.stop_typing(tx, principal.tenant_id, conversation_id, principal.user_id)
            if row is not None and row["was_active"]:
                await _announce_typing(
                    tx, principal.tenant_id, conversation_id, row["root_id"], principal.user_id, False
                )
    return typing


async def expire_typing(db: Database) -> int:
    """Typing indicators not renewed in time stop, with a `typing.update` isTyping=false."""
    async with db.transaction() as tx:
        rows = await repo.expire_typing(tx)
        for row in rows:
            await _announce_typing(
                tx, row["tenant_id"], row["conversation_id"], row["root_id"], row["user_id"], False
            )
    return len(rows)
