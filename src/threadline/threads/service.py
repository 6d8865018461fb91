"""Thread rules: starting threads, replies, edits, tombstones, read markers, tree loads."""

from __future__ import annotations

import contextlib
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, access_level, require, require_writable
from threadline.db import Database, Executor, Transaction
from threadline.errors import bad_input, conflict, forbidden, not_found
from threadline.events.announce import (
    deferring,
    publish_thread_activity,
    publish_thread_new,
    publish_unread_update,
)
from threadline.events.payloads import MessageSnapshot, ThreadActivity, ThreadNew, UnreadUpdate
from threadline.events.scrub import follow_messages
from threadline.files import service as file_store
from threadline.metadata import repository as metadata_repo
from threadline.parts import model as message_parts
from threadline.privacy.modes import masks_events
from threadline.privacy.repository import tenant_policy
from threadline.privacy.writing import event_text, for_storage
from threadline.settings import Settings
from threadline.threads import branches
from threadline.threads import repository as repo
from threadline.threads.paths import ancestor_lengths, ancestor_paths
from threadline.threads.tree_rules import ROOT, TooDeep, reply_placement

ROLES = {"USER", "ASSISTANT", "SYSTEM", "TOOL"}


@dataclass(frozen=True)
class MessageDraft:
    content: str
    role: str = "USER"
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # Key/value strings (metadata.rules), validated by the caller; None for none.
    metadata: dict[str, str] | None = None
    # Content parts (parts.model); None for plain text. After validation, None unless more than one text.
    parts: list[message_parts.Part] | None = None


def validate_content(content: str, settings: Settings) -> str:
    if not content.strip():
        raise bad_input("content must not be empty", argument="content")
    size = len(content.encode("utf-8", errors="surrogatepass"))
    if size > settings.message_max_bytes:
        raise bad_input(
            f"content is {size} bytes; the limit is {settings.message_max_bytes} bytes",
            argument="content",
            limit=settings.message_max_bytes,
        )
    if "\x00" in content:
        raise bad_input("content must not contain NUL characters", argument="content")
    return content


def _validate(draft: MessageDraft, settings: Settings) -> MessageDraft:
    if draft.parts is None:
        validate_content(draft.content, settings)
    else:
        # With parts, `content` is their text projection (or the client's own, for search); a message of only
        # a tool call or an image has none.
        if not draft.parts:
            raise bad_input("parts must not be empty", argument="parts")
        message_parts.validate_parts(draft.parts, settings)
        stored = message_parts.for_storage(draft.parts, draft.content)
        if stored.content:
            validate_content(stored.content, settings)
        draft = replace(draft, content=stored.content, parts=stored.parts)
    if draft.role not in ROLES:
        raise bad_input(f"role must be one of {sorted(ROLES)}", argument="role")
    for name, value in (("promptTokens", draft.prompt_tokens), ("completionTokens", draft.completion_tokens)):
        if value is not None and not 0 <= value <= 10_000_000:
            raise bad_input(f"usage.{name} must be between 0 and 10000000", argument=name)
    if draft.model is not None and len(draft.model) > 128:
        raise bad_input("model is limited to 128 characters", argument="model")
    return draft


def _stored(draft: MessageDraft, pii_policy: str) -> tuple[MessageDraft, list[dict[str, Any]] | None]:
    """The draft as the tenant's PII policy stores it (masked under MASK_ON_WRITE), and its detections."""
    text = for_storage(pii_policy, draft.content, draft.parts)
    return replace(draft, content=text.content, parts=text.parts), text.pii


def _tokens(draft: MessageDraft) -> int:
    return (draft.prompt_tokens or 0) + (draft.completion_tokens or 0)


def snapshot(row: asyncpg.Record | Mapping[str, Any], path_ids: list[uuid.UUID]) -> MessageSnapshot:
    """A message as it travels in an event payload: the one builder of it, for live writes and imports alike
    (events.stored stores it, streaming.render reads it back)."""
    return MessageSnapshot(
        id=row["id"],
        conversation_id=row["conversation_id"],
        root_id=row["root_id"],
        parent_id=row["parent_id"],
        depth=row["depth"],
        path=tuple(path_ids),
        child_count=row["child_count"],
        role=row["role"],
        content=row["content"],
        author_id=row["author_id"],
        model=row["model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        deleted_at=row["deleted_at"],
        usage_imported=row["usage_imported"],
    )


def _event_snapshot(
    row: asyncpg.Record | Mapping[str, Any], path_ids: list[uuid.UUID], pii_policy: str | None
) -> MessageSnapshot:
    """`snapshot` with its text as the tenant's PII policy lets the event log carry it (masked under both
    masking policies: privacy.modes.masks_events)."""
    found = snapshot(row, path_ids)
    text = event_text(pii_policy, found.content)
    return found if text == found.content else replace(found, content=text)


# The path ids of the last replies each open transaction wrote (`add_reply`), by (tenant, message id): a reply to one
# of them is its parent's path plus itself, with no statement. A chain of replies written in one transaction (a
# gateway call's new messages, a run's tool round trips) otherwise looked up every ancestor of every reply again: one
# index probe per level per reply, O(depth^2) over the chain (400 replies, each under the previous, took 4.4 s).
# Only transactions (`Transaction`, gone with their last reference): ids and paths never change, but a message
# written in a transaction that rolls back does not exist, and the pool's statements are each their own.
_RECENT_PATHS: weakref.WeakKeyDictionary[Transaction, dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]]]
_RECENT_PATHS = weakref.WeakKeyDictionary()
RECENT_PATHS_KEPT = 4  # per transaction: a chain needs its last reply's (the memory is depth ids each)


def _remember_path(db: Executor, tenant_id: uuid.UUID, path: list[uuid.UUID]) -> None:
    if not isinstance(db, Transaction):
        return
    recent = _RECENT_PATHS.get(db)
    if recent is None:
        recent = _RECENT_PATHS[db] = {}
    elif len(recent) >= RECENT_PATHS_KEPT:
        del recent[next(iter(recent))]  # the oldest
    recent[(tenant_id, path[-1])] = path


def _known_path(
    recent: dict[tuple[uuid.UUID, uuid.UUID], list[uuid.UUID]] | None,
    tenant_id: uuid.UUID,
    row: asyncpg.Record | Mapping[str, Any],
) -> list[uuid.UUID] | None:
    """The row's path ids without a statement: a root's and a root's reply's are their ids, a reply to a message whose
    path this transaction knows is that path and itself."""
    depth = row.get("depth")
    if depth is None:  # a row without its depth (a caller's narrower select): looked up
        return None
    if depth == 0:
        return [row["id"]]
    if depth == 1:
        return [row["root_id"], row["id"]]
    if recent:
        known = recent.get((tenant_id, row["id"]))
        if known is not None and len(known) == depth + 1:
            return list(known)
        parent = recent.get((tenant_id, row["parent_id"]))
        if parent is not None and len(parent) == depth and parent[0] == row["root_id"]:
            return [*parent, row["id"]]
    return None


async def path_ids(db: Executor, tenant_id: uuid.UUID, rows: list[asyncpg.Record]) -> list[list[uuid.UUID]]:
    """Ancestor ids (root first, the message itself last) for each row, in one statement at most (none for roots,
    their replies, and replies to a message whose path the transaction has just worked out)."""
    recent = _RECENT_PATHS.get(db) if isinstance(db, Transaction) else None
    out: list[list[uuid.UUID] | None] = [_known_path(recent, tenant_id, row) for row in rows]
    unknown = [i for i, known in enumerate(out) if known is None]
    if len(unknown) == 1:
        # One message (every write): its ancestors in one index scan, O(depth) bytes each way.
        row = rows[unknown[0]]
        lengths = ancestor_lengths(bytes(row["path"]))
        ancestors = await repo.ids_along_path(db, tenant_id, row["root_id"], bytes(row["path"]), lengths)
        if len(ancestors) != len(lengths):
            raise LookupError(
                f"message {row['id']}: {len(lengths) - len(ancestors)} of its ancestors are missing"
            )
        out[unknown[0]] = [*ancestors, row["id"]]
        return out  # type: ignore[return-value]  # every one known
    wanted: list[tuple[uuid.UUID, bytes]] = []
    for row, known in zip(rows, out, strict=True):
        if known is None:
            wanted.extend((row["root_id"], p) for p in ancestor_paths(bytes(row["path"])))
    if not wanted:
        return out  # type: ignore[return-value]  # every one known
    found: dict[tuple[uuid.UUID, bytes], uuid.UUID] = {}
    unique = list(dict.fromkeys(wanted))
    for r in await repo.ids_by_paths(db, tenant_id, [w[0] for w in unique], [w[1] for w in unique]):
        found[(r["root_id"], bytes(r["path"]))] = r["id"]
    return [
        known
        if known is not None
        else [found[(row["root_id"], p)] for p in ancestor_paths(bytes(row["path"]))] + [row["id"]]
        for row, known in zip(rows, out, strict=True)
    ]


async def _announce_activity(
    tx: Executor,
    tenant_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    message: asyncpg.Record,
    thread: asyncpg.Record,
    action: str,
    path: list[uuid.UUID],
    pii_policy: str | None = None,
) -> None:
    await publish_thread_activity(
        tx,
        tenant_id,
        ThreadActivity(
            action,
            _event_snapshot(message, path, pii_policy),
            thread["reply_count"],
            thread["last_activity_at"],
        ),
    )
    await announce_unread(tx, tenant_id, message["conversation_id"], message["root_id"], actor_id)


async def announce_unread(
    tx: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
    actor: uuid.UUID | None,
) -> None:
    """An unread.update to every participant but the actor, each carrying their own count: the events of all of
    them in one statement (`deferring`), not one statement per participant (a reply in a conversation of 100
    members made 100 round trips inside its transaction, holding its locks that long)."""
    participants = await conversations.participants_of(tx, tenant_id, [conversation_id])
    others = [p["user_id"] for p in participants if p["user_id"] != actor]
    if not others:
        return
    counts = await repo.unread_counts(tx, tenant_id, root_id, others)
    async with deferring(tx) if len(counts) > 1 else contextlib.nullcontext():
        for row in counts:
            await publish_unread_update(
                tx,
                tenant_id,
                UnreadUpdate(row["unread_count"]),
                conversation_id=conversation_id,
                root_id=root_id,
                recipient_id=row["user_id"],
            )


async def start_thread(
    db: Database, settings: Settings, principal: Principal, conversation_id: uuid.UUID, draft: MessageDraft
) -> asyncpg.Record:
    draft, pii = _stored(_validate(draft, settings), principal.pii_policy)
    message_id = uuid.uuid4()
    async with db.transaction() as tx:
        conversation = await require(tx, principal, conversation_id, Access.WRITE)
        require_writable(conversation)
        # Counters first: the conversation row lock orders this message's seq after every earlier commit.
        await conversations.touch_activity(tx, principal.tenant_id, conversation_id, 1, _tokens(draft))
        row = await repo.insert_message(
            tx,
            principal.tenant_id,
            message_id=message_id,
            conversation_id=conversation_id,
            root_id=message_id,
            parent_id=None,
            depth=ROOT.depth,
            path=ROOT.path,
            role=draft.role,
            content=draft.content,
            author_id=principal.user_id,
            model=draft.model,
            prompt_tokens=draft.prompt_tokens,
            completion_tokens=draft.completion_tokens,
            parts=draft.parts,
            pii=pii,
        )
        if draft.metadata:
            await metadata_repo.set_message_metadata(tx, principal.tenant_id, row["id"], draft.metadata)
        await file_store.attach_parts(tx, principal.tenant_id, principal.user_id, row["id"], draft.parts)
        await repo.insert_thread(tx, principal.tenant_id, row)
        await publish_thread_new(
            tx,
            principal.tenant_id,
            ThreadNew(_event_snapshot(row, [row["id"]], principal.pii_policy), 0, row["created_at"]),
        )
        await announce_unread(tx, principal.tenant_id, conversation_id, row["id"], principal.user_id)
    return row


async def reply(
    db: Database, settings: Settings, principal: Principal, parent_id: uuid.UUID, draft: MessageDraft
) -> tuple[asyncpg.Record, list[uuid.UUID]]:
    """A reply under any message; returns the new row and its path ids."""
    draft = _validate(draft, settings)
    async with db.transaction() as tx:
        # Lock order everywhere: message, then conversation, then thread.
        parent = await repo.message(tx, principal.tenant_id, parent_id, lock=True)
        if parent is None:
            raise not_found("Message")
        conversation = await require(tx, principal, parent["conversation_id"], Access.WRITE)
        require_writable(conversation)
        return await add_reply(
            tx,
            settings,
            principal.tenant_id,
            parent,
            draft,
            principal.user_id,
            pii_policy=principal.pii_policy,
        )


async def add_reply(
    tx: Executor,
    settings: Settings,
    tenant_id: uuid.UUID,
    parent: asyncpg.Record,
    draft: MessageDraft,
    author_id: uuid.UUID | None,
    *,
    pii_policy: str | None = None,
) -> tuple[asyncpg.Record, list[uuid.UUID]]:
    """Insert a reply inside the caller's open transaction: the row, the parent's child count, the thread
    and conversation counters, and the thread.activity / unread.update events.

    The caller has locked `parent` (FOR UPDATE) and checked write access; `draft` is taken as is
    (the run worker writes an empty assistant message and streams its content afterwards). The tenant's PII
    policy applies to it (`pii_policy` when the caller knows it, else read here).
    """
    pii = None
    if draft.content or draft.parts:
        pii_policy = pii_policy or await tenant_policy(tx, tenant_id)
        draft, pii = _stored(draft, pii_policy)
    if parent["deleted_at"] is not None:
        raise conflict("Cannot reply to a deleted message")
    try:
        placement = reply_placement(
            parent["depth"], bytes(parent["path"]), parent["child_count"], settings.thread_max_depth
        )
    except TooDeep:
        raise bad_input(
            f"Replies may nest at most {settings.thread_max_depth} levels deep",
            argument="parentId",
            limit=settings.thread_max_depth,
        ) from None
    # Lock the conversation row (its counters) before drawing the message's seq: writers of one conversation
    # then draw seqs in commit order, so a reader paging by seq, or a read marker, never passes a message
    # that commits later with a smaller seq.
    await conversations.touch_activity(tx, tenant_id, parent["conversation_id"], 1, _tokens(draft))
    row = await repo.insert_message(
        tx,
        tenant_id,
        message_id=uuid.uuid4(),
        conversation_id=parent["conversation_id"],
        root_id=parent["root_id"],
        parent_id=parent["id"],
        depth=placement.depth,
        path=placement.path,
        role=draft.role,
        content=draft.content,
        author_id=author_id,
        model=draft.model,
        prompt_tokens=draft.prompt_tokens,
        completion_tokens=draft.completion_tokens,
        parts=draft.parts,
        pii=pii,
    )
    if draft.metadata:
        await metadata_repo.set_message_metadata(tx, tenant_id, row["id"], draft.metadata)
    # Files its parts name are held by the message from now on (their uploader's, or ones the author may read).
    await file_store.attach_parts(tx, tenant_id, author_id, row["id"], draft.parts)
    await repo.bump_child_count(tx, tenant_id, parent["id"])
    thread = await repo.thread_activity(tx, tenant_id, row["root_id"], replies=1, last_seq=row["seq"])
    (path,) = await path_ids(tx, tenant_id, [row])
    _remember_path(tx, tenant_id, path)  # the next reply of a chain in this transaction builds on it
    await _announce_activity(tx, tenant_id, author_id, row, thread, "REPLY", path, pii_policy)
    await branches.announce_sibling(tx, tenant_id, row, parent["child_count"])
    if author_id is not None:
        # A reply moves its author onto it (a run's answer moves the run's creator: runs.execution).
        await branches.move_current(tx, tenant_id, author_id, row, branches.REPLY)
    return row, path


async def follow_content(
    tx: Executor, tenant_id: uuid.UUID, rows: list[asyncpg.Record], pii_policy: str | None = None
) -> None:
    """After an edit, delete or erasure changed the text of `rows` (as they now are): their streamed chunks
    go, and the logged events that carry their earlier text are rewritten (events.scrub), so neither a read
    nor a replay (`since`) shows it again. (`Message.edits` keeps an edited message's earlier versions on
    purpose, until it is deleted.)"""
    if not rows:
        return
    await repo.drop_chunks(tx, tenant_id, [row["id"] for row in rows])
    if masks_events(pii_policy):
        masked = [{**row, "content": event_text(pii_policy, row["content"])} for row in rows]
        await follow_messages(tx, tenant_id, masked)
    else:
        await follow_messages(tx, tenant_id, rows)


async def _own_message(
    tx: Executor, principal: Principal, message_id: uuid.UUID
) -> tuple[asyncpg.Record, asyncpg.Record]:
    row = await repo.message(tx, principal.tenant_id, message_id, lock=True)
    if row is None:
        raise not_found("Message")
    # A message of a conversation the caller may not read is as unknown as one that does not exist.
    conversation = await require(tx, principal, row["conversation_id"], Access.READ, asked_for="Message")
    return row, conversation


async def edit(
    db: Database, settings: Settings, principal: Principal, message_id: uuid.UUID, content: str
) -> tuple[asyncpg.Record, list[uuid.UUID]]:
    validate_content(content, settings)
    text = for_storage(principal.pii_policy, content)
    content = text.content
    async with db.transaction() as tx:
        row, conversation = await _own_message(tx, principal, message_id)
        if row["author_id"] != principal.user_id:
            raise forbidden("Only the author may edit a message")
        if access_level(principal, conversation) < Access.WRITE:
            raise forbidden("You have read-only access to this conversation")
        require_writable(conversation)
        if row["deleted_at"] is not None:
            raise conflict("A deleted message cannot be edited")
        if row["content"] == content:
            (path,) = await path_ids(tx, principal.tenant_id, [row])
            return row, path
        await repo.record_edit(tx, principal.tenant_id, message_id, row["content"], principal.user_id)
        updated = await repo.set_content(tx, principal.tenant_id, message_id, content, text.pii)
        await _edit_parts(tx, principal.tenant_id, message_id, content)
        await follow_content(tx, principal.tenant_id, [updated], principal.pii_policy)
        thread = await repo.thread_activity(tx, principal.tenant_id, row["root_id"], replies=0, last_seq=None)
        (path,) = await path_ids(tx, principal.tenant_id, [updated])
        await _announce_activity(
            tx, principal.tenant_id, principal.user_id, updated, thread, "EDIT", path, principal.pii_policy
        )
    return updated, path


async def _edit_parts(tx: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, content: str) -> None:
    """An edit replaces the text of a message with parts; its other parts (tool calls, images) stay."""
    stored = await repo.parts_of(tx, tenant_id, [message_id])
    if stored:
        edited = message_parts.with_text(stored[0]["parts"], content)
        await repo.set_parts(
            tx, tenant_id, message_id, None if message_parts.is_plain_text(edited) else edited
        )


async def delete(
    db: Database, principal: Principal, message_id: uuid.UUID
) -> tuple[asyncpg.Record, list[uuid.UUID]]:
    async with db.transaction() as tx:
        row, conversation = await _own_message(tx, principal, message_id)
        is_author = row["author_id"] == principal.user_id
        level = access_level(principal, conversation)
        if level < Access.WRITE:
            # An author demoted to VIEWER no longer writes, deletes included.
            raise forbidden("You have read-only access to this conversation")
        if not is_author and level < Access.MANAGE:
            raise forbidden("Only the author or the conversation's owner may delete a message")
        if row["deleted_at"] is not None:
            raise conflict("The message is already deleted")
        updated = await repo.tombstone(tx, principal.tenant_id, message_id)
        await follow_content(tx, principal.tenant_id, [updated])
        thread = await repo.thread_activity(tx, principal.tenant_id, row["root_id"], replies=0, last_seq=None)
        (path,) = await path_ids(tx, principal.tenant_id, [updated])
        await _announce_activity(tx, principal.tenant_id, principal.user_id, updated, thread, "DELETE", path)
        await branches.leave_deleted(tx, principal.tenant_id, updated)
    return updated, path


async def readable_message(db: Executor, principal: Principal, message_id: uuid.UUID) -> asyncpg.Record:
    row = await repo.message(db, principal.tenant_id, message_id)
    if row is None:
        raise not_found("Message")
    await require(db, principal, row["conversation_id"], Access.READ, asked_for="Message")
    return row


async def mark_read(db: Database, principal: Principal, root_id: uuid.UUID) -> asyncpg.Record:
    async with db.transaction() as tx:
        root = await readable_message(tx, principal, root_id)
        if root["parent_id"] is not None:
            raise bad_input("threadMarkRead takes the id of a thread's root message", argument="rootId")
        await repo.mark_read(tx, principal.tenant_id, principal.user_id, root_id)
        thread = await repo.thread_with_root(tx, principal.tenant_id, root_id, principal.user_id)
        assert thread is not None
        await publish_unread_update(
            tx,
            principal.tenant_id,
            UnreadUpdate(thread["unread_count"]),
            conversation_id=root["conversation_id"],
            root_id=root_id,
            recipient_id=principal.user_id,
        )
    return thread
