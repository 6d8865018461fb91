"""What a write stores under the tenant's PII policy: the content (masked under MASK_ON_WRITE) and its
detections for `message.pii`. Every path that writes message text passes through `for_storage` (threads:
posts, replies, edits; porting: imports and merges; runs: an assistant's finished answer)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from threadline.db import Executor
from threadline.privacy.detectors import detect
from threadline.privacy.masking import mask, mask_text, to_json
from threadline.privacy.policy import PiiPolicy, parse, tenant_policy


@dataclass(frozen=True, slots=True)
class StoredText:
    content: str
    pii: list[dict[str, Any]] | None  # None: not scanned (policy OFF)
    parts: list[dict[str, Any]] | None = None


def for_storage(policy: PiiPolicy | str, content: str, parts: list[dict[str, Any]] | None = None) -> StoredText:
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
