"""What a write stores under the tenant's PII policy: the content (masked under MASK_ON_WRITE) and its
detections for `message.pii`. Every path that writes message text passes through `for_storage` (threads:
posts, replies, edits; porting: imports and merges; runs: an assistant's finished answer)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from threadline.db import Executor
from threadline.events.scrub import follow_messages
from threadline.privacy import repository as privacy_repo
from threadline.privacy.detectors import detect
from threadline.privacy.masking import mask, mask_text, to_json
from threadline.privacy.modes import PiiPolicy, masks_events, parse
from threadline.privacy.repository import tenant_policy
from threadline.threads import repository as threads_repo


@dataclass(frozen=True, slots=True)
class StoredText:
    content: str
    pii: list[dict[str, Any]] | None  # None: not scanned (policy OFF)
    parts: list[dict[str, Any]] | None = None


def for_storage(
    policy: PiiPolicy | str, content: str, parts: list[dict[str, Any]] | None = None
) -> StoredText:
    policy = parse(policy)
    if policy is PiiPolicy.OFF:
        return StoredText(content, None, parts)
    if policy is PiiPolicy.MASK_ON_WRITE:
        masked, spans = mask(content)
        return StoredText(masked, to_json(spans), mask_parts(parts))
    return StoredText(content, to_json(detect(content)), parts)


def mask_parts(parts: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Text-bearing fields of parts masked (text, reasoning, tool arguments and results); ids, urls and types
    kept."""
    if parts is None:
        return None
    out = []
    for part in parts:
        copy = dict(part)
        for field in ("text", "arguments", "content"):
            if isinstance(copy.get(field), str):
                copy[field] = mask_text(copy[field])
        out.append(copy)
    return out


async def stored_text(
    db: Executor, tenant_id: uuid.UUID, content: str, parts: list[dict[str, Any]] | None = None
) -> StoredText:
    """`for_storage` under the tenant's current policy (one statement: for writers without a Principal)."""
    return for_storage(await tenant_policy(db, tenant_id), content, parts)


def event_text(policy: PiiPolicy | str | None, content: str) -> str:
    """The text a logged event carries (privacy.modes.masks_events)."""
    return mask_text(content) if content and masks_events(policy) else content


async def streamed_delta(tx: Executor, tenant_id: uuid.UUID, delta: str) -> tuple[str, str]:
    """(what a streamed piece of output stores, what its `message.delta` event carries) under the tenant's
    policy. Each piece is masked on its own; `settle_output` masks the whole text once it is final."""
    policy = await tenant_policy(tx, tenant_id)
    stored = mask_text(delta) if policy is PiiPolicy.MASK_ON_WRITE else delta
    return stored, event_text(policy, delta)


async def settle_output(tx: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    """A streamed message became final: its detections are stored, and under a masking policy PII that spanned
    two pieces is masked too (MASK_ON_WRITE: in the content, its chunks dropped; both: in the logged events,
    whose deltas lose their text as after an edit). True when the stored content changed."""
    policy = await tenant_policy(tx, tenant_id)
    if policy is PiiPolicy.OFF:
        return False
    row = await privacy_repo.message_text(tx, tenant_id, message_id)
    if row is None or row["deleted_at"] is not None:
        return False
    text = for_storage(policy, row["content"])
    await privacy_repo.set_text(tx, tenant_id, message_id, text.content, text.pii)
    if not text.pii or not masks_events(policy):
        return False
    if policy is PiiPolicy.MASK_ON_WRITE:
        await threads_repo.drop_chunks(tx, tenant_id, [message_id])
    current = {**row, "content": event_text(policy, row["content"])}
    await follow_messages(tx, tenant_id, [current])
    return bool(text.content != row["content"])


def imported_for_storage(policy: PiiPolicy | str, messages: list[dict[str, Any]]) -> None:
    """An import's planned messages (porting.importer rows) as the policy stores them: under MASK_ON_WRITE
    their text and parts are masked in place, before anything is written (their `thread.new` events are built
    from these rows). Detections of imported messages are stored by `threadline pii backfill`."""
    if parse(policy) is not PiiPolicy.MASK_ON_WRITE:
        return
    for m in messages:
        if isinstance(m.get("content"), str):
            m["content"] = mask_text(m["content"])
        if m.get("parts") is not None:
            m["parts"] = mask_parts(m["parts"])


async def mask_logged_events(
    tx: Executor, tenant_id: uuid.UUID, policy: PiiPolicy | str, conversation_id: uuid.UUID
) -> None:
    """After an import into (or a merge with) a conversation under MASK_ON_READ: the events it logged carry the
    imported text as stored; they are rewritten masked (a replay may reach any reader)."""
    if parse(policy) is not PiiPolicy.MASK_ON_READ:
        return
    rows = await privacy_repo.texts_with_events(tx, tenant_id, conversation_id)
    masked = [{**row, "content": mask_text(row["content"])} for row in rows]
    await follow_messages(
        tx, tenant_id, [m for m, row in zip(masked, rows, strict=True) if m["content"] != row["content"]]
    )
