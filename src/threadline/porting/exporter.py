"""Export: one conversation as a Threadline document, or everything of one user, streamed to a file."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from threadline.audit.service import Actor, AuditAction
from threadline.auth import repository as users
from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require
from threadline.db import Database, Executor
from threadline.errors import forbidden, not_found
from threadline.files import archives as file_archives
from threadline.ids import Kind, encode_id
from threadline.links.service import links_for_export
from threadline.organise import portable as organisation
from threadline.porting import extras, request_limits
from threadline.porting import repository as repo
from threadline.porting import threadline_format as fmt
from threadline.porting.service import audited_export
from threadline.privacy.reading import mask_export, reader_for
from threadline.tiers import service as tiers

# How the generic run export names the id columns of the runs domain's tables.
_ID_KINDS = {
    "run_id": Kind.RUN,
    "conversation_id": Kind.CONVERSATION,
    "message_id": Kind.MESSAGE,
    "output_message_id": Kind.MESSAGE,
    "root_id": Kind.MESSAGE,
    "created_by": Kind.USER,
    "user_id": Kind.USER,
    "author_id": Kind.USER,
}


async def conversation_document(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation: asyncpg.Record,
    exported_at: datetime,
    feedback_of: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The document; with `feedback_of`, that user's feedback on its messages goes along (porting.extras)."""
    # A cold conversation's content comes back first (tiers/).
    if "cold" not in conversation.keys() or conversation["cold"]:
        await tiers.restore(db, tenant_id, conversation["id"], explicit=True)  # even from deep storage
    rows = await repo.conversation_messages(db, tenant_id, conversation["id"])
    # A deleted message is a tombstone: none of its attachments go out (an imported one's `extracted_content` is
    # the text of the document it carried; a held file's bytes would go into a zip export), whatever rows of them
    # the delete left behind.
    deleted = {r["id"] for r in rows if r["deleted_at"] is not None}
    attachments: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for a in await repo.conversation_attachments(db, tenant_id, conversation["id"]):
        if a["message_id"] not in deleted:
            attachments.setdefault(a["message_id"], []).append(a["data"])
    # Files the messages hold (uploads): listed as `stored_file` entries; a zip export carries their bytes.
    held = await file_archives.export_entries(
        db, tenant_id, [r["id"] for r in rows if r["id"] not in deleted]
    )
    for message_id, entries in held.items():
        attachments.setdefault(message_id, []).extend(entries)
    messages = [fmt.message_entry(r, attachments.get(r["id"], [])) for r in rows]
    more = await extras.message_extras(
        db, tenant_id, conversation["id"], [r["id"] for r in rows], feedback_of
    )
    for row, entry in zip(rows, messages, strict=True):
        entry.update(more.get(row["id"], {}))
    runs = await runs_of(db, tenant_id, conversation["id"])
    document = fmt.document(conversation, messages, runs, exported_at)
    # Where an imported conversation came from; a native one is exported as it always was, without it.
    for origin in await repo.origins(db, tenant_id, [conversation["id"]]):
        document["conversation"]["imported_from"] = origin["imported_from"]
    return document


async def add_organisation(
    db: Executor,
    tenant_id: uuid.UUID,
    reader: Principal | None,
    user_id: uuid.UUID | None,
    document: dict[str, Any],
    conversation: asyncpg.Record,
) -> None:
    """Adds `links` (those whose other end `reader` may read; all for the operator) and, for a user, where they
    keep the conversation and their bookmarks in it (`organisation`, left out when there is nothing)."""
    document["links"] = await links_for_export(db, tenant_id, reader, conversation["id"])
    if user_id is not None:
        entry = await organisation.conversation_entry(db, tenant_id, user_id, conversation["id"])
        if entry is not None:
            document["organisation"] = entry


async def runs_of(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> list[dict[str, Any]]:
    """The conversation's runs and their steps, read generically from the runs domain's tables.

    Exports made before the runs tables existed simply carry `"runs": []`.
    """
    if not await repo.table_exists(db, "run"):
        return []
    runs = await repo.rows_as_json(db, "run", tenant_id, "conversation_id", [conversation_id])
    steps: dict[str, list[dict[str, Any]]] = {}
    if runs and await repo.table_exists(db, "run_step"):
        ids = [uuid.UUID(r["id"]) for r in runs]
        for step in await repo.rows_as_json(db, "run_step", tenant_id, "run_id", ids):
            steps.setdefault(step["run_id"], []).append(_public(step, Kind.RUN_STEP))
    return [{**_public(r, Kind.RUN), "steps": steps.get(r["id"], [])} for r in runs]


def _public(row: dict[str, Any], kind: Kind) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "tenant_id":
            continue
        id_kind = kind if key == "id" else _ID_KINDS.get(key)
        if id_kind is not None and isinstance(value, str):
            try:
                value = encode_id(id_kind, uuid.UUID(value))
            except ValueError:
                pass
        out[key] = value
    return out


async def export_conversation(
    db: Database, principal: Principal | Actor, conversation_id: uuid.UUID, *, max_messages: int | None = None
) -> dict[str, Any]:
    """A conversation the caller may read, as a document; audited. An operator (no principal) sees all.

    `max_messages` (the API's THREADLINE_QUERY_MAX_MESSAGES): a larger conversation is refused before its messages
    are read, as a query returning that many is (the document is built whole in memory, then encoded)."""
    if isinstance(principal, Principal):
        row = await require(db, principal, conversation_id, Access.READ)
    else:
        row = await repo.conversation_row(db, principal.tenant_id, conversation_id)
        if row is None:
            raise not_found("Conversation")
    request_limits.check_export_messages(row["message_count"], max_messages)
    # The exporting user's own feedback goes along (an operator's export: the owner's).
    viewer = principal.user_id if isinstance(principal, Principal) else row["owner_id"]
    document = await conversation_document(db, principal.tenant_id, row, datetime.now(UTC), viewer)
    if isinstance(principal, Principal):
        mask_export(document, reader_for(principal))  # privacy: MASK_ON_READ
    reader = principal if isinstance(principal, Principal) else None
    await add_organisation(db, principal.tenant_id, reader, reader.user_id if reader else None, document, row)
    await audited_export(
        db,
        principal,
        AuditAction.CONVERSATION_EXPORT,
        (Kind.CONVERSATION, conversation_id),
        {"messages": len(document["messages"])},
    )
    return document


async def export_user(
    db: Database, actor: Principal | Actor, user_id: uuid.UUID, write: Callable[[bytes], None]
) -> dict[str, int]:
    """Everything a user owns or wrote, for a data-access request, written piecewise (bounded memory).

    `{metadata, user, conversations: [documents of the conversations they own], authored_messages:
    [their messages in other conversations]}`. Admins may export anyone in their tenant, users themselves.
    """
    # Looked up first: a user outside the caller's tenant is NOT_FOUND whoever asks (API.md); members may
    # see who is in their own tenant, so FORBIDDEN after the lookup reveals nothing.
    user = await users.user_by_id(db, actor.tenant_id, user_id)
    if user is None:
        raise not_found("User")
    if isinstance(actor, Principal) and actor.user_id != user_id and not actor.is_admin:
        raise forbidden("Only tenant admins may export another user's data")
    now = datetime.now(UTC)
    head = {
        "metadata": {
            "exported_at": fmt.iso(now),
            "export_version": fmt.EXPORT_VERSION,
            "platform": fmt.PLATFORM,
            "kind": "user",
        },
        "user": {
            "id": encode_id(Kind.USER, user["id"]),
            "email": user["email"],
            "display_name": user["display_name"],
            "role": user["role"],
            "team": user["team"],
            "created_at": fmt.iso(user["created_at"]),
        },
    }
    # What the user organised (folders, pins, bookmarks) is theirs: part of their data.
    head.update(await organisation.user_entries(db, actor.tenant_id, user_id))
    write(orjson.dumps(head)[:-1] + b',"conversations":[')
    conversation_ids = await repo.owned_conversation_ids(db, actor.tenant_id, user_id)
    messages = 0
    for n, conversation_id in enumerate(conversation_ids):
        row = await repo.conversation_row(db, actor.tenant_id, conversation_id)
        if row is None:  # deleted meanwhile
            continue
        document = await conversation_document(db, actor.tenant_id, row, now, user_id)
        if isinstance(actor, Principal):
            mask_export(document, reader_for(actor))  # privacy: others' messages under MASK_ON_READ
        reader = actor if isinstance(actor, Principal) else None
        await add_organisation(db, actor.tenant_id, reader, user_id, document, row)
        messages += len(document["messages"])
        write((b"," if n else b"") + orjson.dumps(document))
    write(b'],"authored_messages":[')
    await tiers.restore_naming_user(db, actor.tenant_id, user_id)  # their messages in cold conversations too
    elsewhere = await repo.authored_elsewhere(db, actor.tenant_id, user_id)
    for n, message in enumerate(elsewhere):
        entry = {
            "conversation_id": encode_id(Kind.CONVERSATION, message["conversation_id"]),
            **fmt.message_entry(message, []),
        }
        write((b"," if n else b"") + orjson.dumps(entry))
    write(b"]}")
    counts = {
        "conversations": len(conversation_ids),
        "messages": messages,
        "authoredElsewhere": len(elsewhere),
    }
    await audited_export(db, actor, AuditAction.USER_EXPORT, (Kind.USER, user_id), counts)
    return counts
