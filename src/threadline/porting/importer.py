"""From an `ImportedConversation` to rows: the tree, its paths and counters, then one transaction.

Planning is pure and checks everything first (sizes, depth, tags), so a conversation either imports
whole or not at all. Each message row gets what the threads domain maintains for live writes: the
materialised path and depth (threads.tree_rules, as for a live reply), root, child count;
each root gets a thread row (reply count, last seq, last activity); the conversation gets its message
and token counts. Rows go in with COPY, one conversation per transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from threadline.conversations import repository as conversations
from threadline.conversations.rules import normalise_tags
from threadline.db import Transaction
from threadline.errors import ThreadlineError
from threadline.events.announce import publish_thread_new
from threadline.events.payloads import ThreadNew
from threadline.porting import repository as repo
from threadline.porting.model import ImportedConversation, ImportedMessage, Rejected, settle_parents
from threadline.settings import Settings
from threadline.threads.service import snapshot
from threadline.threads.tree_rules import ROOT, TooDeep, reply_placement


@dataclass
class Plan:
    source: str
    external_id: str
    conversation: dict[str, Any]
    # Message rows in depth-first order, without tenant, conversation, author and seq (added at insert).
    messages: list[dict[str, Any]]
    roots: list[int]  # indexes into messages
    attachments: list[tuple[int, int, dict[str, Any]]]  # (message index, position, data)
    warnings: list[str] = field(default_factory=list)


def _clip(value: str | None, limit: int, name: str, warnings: list[str]) -> str | None:
    if value is not None and len(value) > limit:
        warnings.append(f"{name} was cut to {limit} characters")
        return value[:limit]
    return value


def _clean_text(message: ImportedMessage, settings: Settings, warnings: list[str]) -> str:
    content = message.content
    if "\x00" in content:
        content = content.replace("\x00", "\ufffd")
        warnings.append(f"message {message.key}: NUL characters replaced")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        content = content.encode("utf-8", "replace").decode("utf-8")
        warnings.append(f"message {message.key}: invalid characters replaced")
        size = len(content.encode("utf-8"))
    if size > settings.message_max_bytes:
        raise Rejected(
            f"message {message.key}: content is {size} bytes; the limit is {settings.message_max_bytes} bytes "
            "(THREADLINE_MESSAGE_MAX_BYTES)"
        )
    return content


def plan(imported: ImportedConversation, settings: Settings) -> Plan:
    warnings = list(imported.warnings)
    now = datetime.now(UTC)
    by_key: dict[str, ImportedMessage] = {}
    for message in imported.messages:
        if message.key in by_key:
            warnings.append(f"message {message.key}: duplicate id, the later one was skipped")
            continue
        by_key[message.key] = message
    claimed = [(key, message.parent_key) for key, message in by_key.items()]
    parents = settle_parents(claimed, by_key, "message", warnings)

    children: dict[str | None, list[str]] = {}
    for key in by_key:
        children.setdefault(parents[key], []).append(key)

    messages: list[dict[str, Any]] = []
    roots: list[int] = []
    attachments: list[tuple[int, int, dict[str, Any]]] = []
    fallback_time = imported.created_at or now
    # Depth-first from each root: (key, parent row index or -1, rank among siblings).
    stack: list[tuple[str, int, int]] = [(k, -1, 0) for k in reversed(children.get(None, []))]
    while stack:
        key, parent_index, rank = stack.pop()
        message = by_key[key]
        parent = messages[parent_index] if parent_index >= 0 else None
        try:
            placement = (
                reply_placement(parent["depth"], parent["path"], rank, settings.thread_max_depth)
                if parent
                else ROOT
            )
        except TooDeep as exc:
            raise Rejected(
                f"message {key} is {exc.depth} replies deep; the limit is {exc.limit} (THREADLINE_THREAD_MAX_DEPTH)"
            ) from None
        row_id = uuid.uuid4()
        created = message.created_at or (parent["created_at"] if parent else fallback_time)
        index = len(messages)
        messages.append(
            {
                "id": row_id,
                "root_index": parent["root_index"] if parent else index,
                "parent_id": parent["id"] if parent else None,
                "depth": placement.depth,
                "path": placement.path,
                "child_count": len(children.get(key, [])),
                "role": message.role,
                "content": _clean_text(message, settings, warnings),
                "model": _clip(message.model, 128, f"message {key}: model", warnings),
                "prompt_tokens": message.prompt_tokens,
                "completion_tokens": message.completion_tokens,
                "created_at": created,
                "edited_at": message.edited_at,
                "deleted_at": message.deleted_at,
                "authored": message.role == "USER" if message.authored is None else message.authored,
                "usage_imported": message.prompt_tokens is not None or message.completion_tokens is not None,
            }
        )
        if parent is None:
            roots.append(index)
        for position, data in enumerate(message.attachments):
            attachments.append((index, position, data))
        kids = children.get(key, [])
        for child_rank in range(len(kids) - 1, -1, -1):
            stack.append((kids[child_rank], index, child_rank))

    try:
        tags = normalise_tags(imported.tags, settings)
    except ThreadlineError as exc:
        raise Rejected(exc.message) from exc
    times = [m["created_at"] for m in messages]
    created_at = imported.created_at or (min(times) if times else now)
    last_activity = imported.last_activity_at or max([created_at, *times])
    title = (imported.title or "").strip() or "Untitled conversation"
    conversation = {
        "title": _clip(title, settings.title_max_chars, "title", warnings),
        "description": _clip(imported.description, settings.description_max_chars, "description", warnings),
        "tags": tags,
        "status": imported.status,
        "session_id": _clip(imported.session_id, 255, "session_id", warnings),
        "ai_provider": _clip(imported.ai_provider, 64, "ai_provider", warnings),
        "model": _clip(imported.model, 128, "model", warnings),
        "max_history_messages": imported.max_history_messages or 20,
        "message_count": len(messages),
        # Usage in a file is self-reported: kept on each message (flagged as imported) but never counted as
        # the conversation's spend, which only Threadline's own runs and live messages add to.
        "token_count": 0,
        "created_at": created_at,
        "updated_at": imported.updated_at or last_activity,
        "last_activity_at": last_activity,
    }
    return Plan(
        imported.source.value, imported.external_id, conversation, messages, roots, attachments, warnings
    )


class AlreadyImported(Exception):
    """Another import of the same source item committed first."""


async def insert(
    tx: Transaction,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    plan: Plan,
    target: asyncpg.Record | None = None,
) -> uuid.UUID:
    """Insert a planned conversation (or add its threads to `target`); returns the conversation id."""
    messages = plan.messages
    if target is None:
        conversation_id = uuid.uuid4()
        seqs = await repo.insert_imported_conversation(
            tx,
            tenant_id,
            user_id,
            plan.source,
            plan.external_id,
            len(messages),
            id=conversation_id,
            **plan.conversation,
        )
        if seqs is None:
            raise AlreadyImported(plan.external_id)
    else:
        conversation_id = target["id"]
        if not await repo.claim_source(tx, tenant_id, plan.source, plan.external_id, conversation_id):
            raise AlreadyImported(plan.external_id)
        seqs = await repo.next_seqs(tx, len(messages))
    if messages:
        # Sequence numbers in time order, so "oldest first" by seq matches the source's chronology.
        order = sorted(range(len(messages)), key=lambda i: (messages[i]["created_at"], i))
        seq_of = [0] * len(messages)
        for i, seq in zip(order, seqs, strict=True):
            seq_of[i] = seq
        records = []
        for i, m in enumerate(messages):
            root = messages[m["root_index"]]
            records.append(
                (
                    m["id"],
                    tenant_id,
                    conversation_id,
                    root["id"],
                    m["parent_id"],
                    m["depth"],
                    m["path"],
                    seq_of[i],
                    m["child_count"],
                    m["role"],
                    m["content"],
                    user_id if m["authored"] else None,
                    m["model"],
                    m["prompt_tokens"],
                    m["completion_tokens"],
                    m["created_at"],
                    m["edited_at"],
                    m["deleted_at"],
                    m["usage_imported"],
                )  # fmt: skip
            )
        await repo.copy_messages(tx, records)
        await repo.copy_threads(tx, _thread_records(plan, tenant_id, conversation_id, seq_of))
        await repo.insert_attachments(
            tx,
            [
                (uuid.uuid4(), tenant_id, messages[i]["id"], position, data)
                for i, position, data in plan.attachments
            ],
        )
    if target is not None:
        await conversations.touch_activity(
            tx, tenant_id, conversation_id, len(messages), plan.conversation["token_count"]
        )
        # The conversation already has readers: announce each new thread as threadStart would.
        for index in plan.roots:
            root = {**messages[index], "conversation_id": conversation_id, "root_id": messages[index]["id"]}
            root["author_id"] = user_id if root["authored"] else None
            thread = ThreadNew(
                snapshot(root, [root["id"]]), _subtree_size(plan, index) - 1, root["created_at"]
            )
            await publish_thread_new(tx, tenant_id, thread)
    return conversation_id


def _subtree_size(plan: Plan, root_index: int) -> int:
    later = [r for r in plan.roots if r > root_index]
    return (later[0] if later else len(plan.messages)) - root_index


def _thread_records(
    plan: Plan, tenant_id: uuid.UUID, conversation_id: uuid.UUID, seq_of: list[int]
) -> list[tuple[Any, ...]]:
    # Messages are depth-first, so each thread is the run of rows from its root to the next root.
    bounds = [*plan.roots, len(plan.messages)]
    records = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        root = plan.messages[start]
        records.append(
            (
                root["id"],
                tenant_id,
                conversation_id,
                end - start - 1,
                max(seq_of[start:end]),
                root["created_at"],
                max(m["created_at"] for m in plan.messages[start:end]),
            )
        )
    return records
