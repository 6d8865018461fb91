"""Conversation rules: lifecycle, membership and invites. Transactions and publish() live here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from threadline.audit.service import AuditAction, record
from threadline.auth import repository as users
from threadline.auth.principal import Principal
from threadline.conversations import repository as repo
from threadline.conversations.access import Access, access_level, require
from threadline.conversations.rules import (
    AI_PROVIDER_MAX_CHARS,
    MODEL_MAX_CHARS,
    SESSION_ID_MAX_CHARS,
    bounded_text,
    max_history,
    normalise_tags,
    normalise_title,
)
from threadline.db import Database
from threadline.errors import bad_input, conflict, forbidden, not_found
from threadline.events.announce import publish_membership_changed
from threadline.events.payloads import MembershipChanged
from threadline.ids import Kind, encode_id
from threadline.metadata import rules as metadata_rules
from threadline.metadata.rules import MetadataFilter
from threadline.settings import Settings


@dataclass
class ConversationFields:
    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    ai_provider: str | None = None
    model: str | None = None
    session_id: str | None = None
    max_history_messages: int | None = None
    metadata: object = None  # a JSON object of strings; {} clears it


def _validated(fields: ConversationFields, settings: Settings) -> dict[str, Any]:
    """Only the fields that were given, normalised; BAD_USER_INPUT on the first bad one."""
    out: dict[str, Any] = {}
    if fields.title is not None:
        out["title"] = normalise_title(fields.title, settings)
    if fields.description is not None:
        out["description"] = bounded_text(fields.description, settings.description_max_chars, "description")
    if fields.tags is not None:
        out["tags"] = normalise_tags(fields.tags, settings)
    if fields.ai_provider is not None:
        out["ai_provider"] = (
            bounded_text(fields.ai_provider.strip(), AI_PROVIDER_MAX_CHARS, "aiProvider") or None
        )
    if fields.model is not None:
        out["model"] = bounded_text(fields.model.strip(), MODEL_MAX_CHARS, "model") or None
    if fields.session_id is not None:
        out["session_id"] = bounded_text(fields.session_id, SESSION_ID_MAX_CHARS, "sessionId") or None
    if fields.max_history_messages is not None:
        out["max_history_messages"] = max_history(fields.max_history_messages)
    if fields.metadata is not None:
        out["metadata"] = metadata_rules.validated(fields.metadata)
    return out


async def create(
    db: Database, settings: Settings, principal: Principal, fields: ConversationFields
) -> asyncpg.Record:
    values: dict[str, object] = {
        "title": "New conversation",
        "description": "",
        "tags": [],
        "ai_provider": None,
        "model": None,
        "session_id": None,
        "max_history_messages": 20,
    }
    values.update(_validated(fields, settings))
    # Who set the title (enrich/): a title given here is the user's and is never replaced by a generated one.
    values["title_source"] = "USER" if fields.title is not None else "DEFAULT"
    metadata = values.pop("metadata", None)
    async with db.transaction() as tx:
        row = await repo.insert_conversation(tx, principal.tenant_id, principal.user_id, **values)
        if metadata is not None:
            row = await repo.update_conversation(tx, principal.tenant_id, row["id"], {"metadata": metadata})
        await repo.insert_participant(tx, principal.tenant_id, row["id"], principal.user_id, "OWNER")
    return row


async def get(db: Database, principal: Principal, conversation_id: uuid.UUID) -> asyncpg.Record:
    """The row only: a cold conversation's content comes back when a content field is read (tiers/)."""
    return await require(db, principal, conversation_id, Access.READ, metadata_only=True)


async def update(
    db: Database,
    settings: Settings,
    principal: Principal,
    conversation_id: uuid.UUID,
    fields: ConversationFields,
) -> asyncpg.Record:
    changes = _validated(fields, settings)
    if "title" in changes:
        changes["title_source"] = "USER"  # the user's title from now on: never regenerated (enrich/)
    async with db.transaction() as tx:
        current = await require(tx, principal, conversation_id, Access.MANAGE, lock=True)
        if not changes:
            return current
        return await repo.update_conversation(tx, principal.tenant_id, conversation_id, changes)


_TRANSITIONS = {
    "archive": ({"ACTIVE"}, "ARCHIVED"),
    "restore": ({"ARCHIVED", "DELETED"}, "ACTIVE"),
    "delete": ({"ACTIVE", "ARCHIVED"}, "DELETED"),
}


async def set_status(
    db: Database, principal: Principal, conversation_id: uuid.UUID, action: str
) -> asyncpg.Record:
    allowed_from, target = _TRANSITIONS[action]
    # Restoring also brings content back from deep storage (tiers/), in a transaction of its own that reports
    # its progress (`Conversation.storage`); an ACTIVE conversation that was only in deep storage is done then.
    thawed = action == "restore" and bool(
        (await require(db, principal, conversation_id, Access.MANAGE, explicit=True))["cold"]
    )
    async with db.transaction() as tx:
        current = await require(tx, principal, conversation_id, Access.MANAGE, lock=True)
        if thawed and current["status"] == "ACTIVE":
            return current
        if current["status"] not in allowed_from:
            raise conflict(f"Cannot {action} a conversation whose status is {current['status']}")
        return await repo.update_conversation(tx, principal.tenant_id, conversation_id, {"status": target})


async def list_page(
    db: Database,
    principal: Principal,
    *,
    status: str | None,
    tags: list[str] | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | tuple[int, datetime, uuid.UUID] | None,
    metadata: MetadataFilter | None = None,
    folder_id: uuid.UUID | None = None,
    pinned_first: bool = False,
    unfiled: bool = False,
    relations: repo.PageRelations | None = None,
) -> list[asyncpg.Record]:
    return await repo.list_conversations(
        db,
        principal,
        status=status,
        tags=tags,
        limit=limit,
        after=after,
        metadata=metadata,
        folder_id=folder_id,
        pinned_first=pinned_first,
        unfiled=unfiled,
        relations=relations,
    )


async def _membership_event(
    tx: Any,
    principal: Principal,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    change: str,
    role: str | None,
) -> None:
    await publish_membership_changed(
        tx, principal.tenant_id, MembershipChanged(user_id, change, role), conversation_id=conversation_id
    )


def _invitable_role(role: str) -> str:
    if role not in {"MEMBER", "VIEWER"}:
        raise bad_input("An invite grants MEMBER or VIEWER; a conversation has one OWNER", argument="role")
    return role


async def invite(
    db: Database, principal: Principal, conversation_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> asyncpg.Record:
    role = _invitable_role(role)
    async with db.transaction() as tx:
        await require(tx, principal, conversation_id, Access.MANAGE, lock=True)
        if await users.user_by_id(tx, principal.tenant_id, user_id) is None:
            raise not_found("User")
        if await repo.participant(tx, principal.tenant_id, conversation_id, user_id) is not None:
            raise conflict("That user is already a participant")
        if await repo.pending_invite_for(tx, principal.tenant_id, conversation_id, user_id) is not None:
            raise conflict("That user already has a pending invite to this conversation")
        return await repo.insert_invite(
            tx, principal.tenant_id, conversation_id, user_id, principal.user_id, role
        )


async def accept_invite(db: Database, principal: Principal, invite_id: uuid.UUID) -> asyncpg.Record:
    async with db.transaction() as tx:
        inv = await repo.invite_for_update(tx, principal.tenant_id, invite_id)
        if inv is None or inv["user_id"] != principal.user_id:
            raise not_found("Invite")
        if inv["status"] != "PENDING":
            raise conflict(f"This invite is already {inv['status'].lower()}")
        conv = await repo.conversation_with_access(
            tx, principal.tenant_id, inv["conversation_id"], principal.user_id
        )
        if conv is None or conv["status"] == "DELETED":
            raise not_found("Conversation")
        await repo.mark_invite_accepted(tx, principal.tenant_id, invite_id)
        participant = await repo.insert_participant(
            tx, principal.tenant_id, inv["conversation_id"], principal.user_id, inv["role"]
        )
        await _membership_event(
            tx, principal, inv["conversation_id"], principal.user_id, "JOINED", inv["role"]
        )
        return participant


async def remove_participant(
    db: Database, principal: Principal, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> bool:
    async with db.transaction() as tx:
        need = Access.READ if user_id == principal.user_id else Access.MANAGE
        await require(tx, principal, conversation_id, need, lock=True)
        target = await repo.participant(tx, principal.tenant_id, conversation_id, user_id)
        if target is None:
            raise not_found("Participant")
        if target["role"] == "OWNER":
            raise conflict("The owner cannot be removed from their conversation")
        await repo.delete_participant(tx, principal.tenant_id, conversation_id, user_id)
        await _membership_event(tx, principal, conversation_id, user_id, "REMOVED", None)
    return True


async def set_participant_role(
    db: Database, principal: Principal, conversation_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> asyncpg.Record:
    role = _invitable_role(role)
    async with db.transaction() as tx:
        await require(tx, principal, conversation_id, Access.MANAGE, lock=True)
        target = await repo.participant(tx, principal.tenant_id, conversation_id, user_id)
        if target is None:
            raise not_found("Participant")
        if target["role"] == "OWNER":
            raise forbidden("The owner's role cannot be changed")
        row = await repo.set_participant_role(tx, principal.tenant_id, conversation_id, user_id, role)
        assert row is not None
        await _membership_event(tx, principal, conversation_id, user_id, "ROLE_CHANGED", role)
        details = {
            "conversationId": encode_id(Kind.CONVERSATION, conversation_id),
            "from": target["role"],
            "to": role,
        }
        await record(tx, principal, AuditAction.PARTICIPANT_ROLE_SET, (Kind.USER, user_id), details)
        return row


async def readable_participant(
    db: Database, principal: Principal, participant_id: uuid.UUID
) -> asyncpg.Record:
    """A participant row, for whoever may read its conversation."""
    row = await repo.participant_by_id(db, principal.tenant_id, participant_id)
    if row is None:
        raise not_found("Participant")
    await require(db, principal, row["conversation_id"], Access.READ)
    return row


async def readable_invite(db: Database, principal: Principal, invite_id: uuid.UUID) -> asyncpg.Record:
    """An invite, for its invitee and for whoever manages its conversation; NOT_FOUND for anyone else."""
    row = await repo.invite_by_id(db, principal.tenant_id, invite_id)
    if row is None:
        raise not_found("Invite")
    if row["user_id"] != principal.user_id:
        conversation = await repo.conversation_with_access(
            db, principal.tenant_id, row["conversation_id"], principal.user_id
        )
        if conversation is None or access_level(principal, conversation) < Access.MANAGE:
            raise not_found("Invite")
    return row
