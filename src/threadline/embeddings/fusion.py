"""Reciprocal rank fusion of the keyword and vector candidate lists of a HYBRID search."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    conversation_id: uuid.UUID
    last_activity_at: datetime
    message_id: uuid.UUID | None


@dataclass(frozen=True)
class Fused:
    conversation_id: uuid.UUID
    last_activity_at: datetime
    message_id: uuid.UUID | None  # the keyword list's best message, else the vector list's
    score: float
    keyword_rank: int | None
    semantic_rank: int | None


def fuse(keyword: list[Candidate], semantic: list[Candidate], k: int) -> list[Fused]:
    """Every candidate of either list scored by sum(1 / (k + rank)), best first (ties: most recent activity,
    then id, all descending: the order of every search result list)."""
    keyword_ranks = {c.conversation_id: rank for rank, c in enumerate(keyword, 1)}
    semantic_ranks = {c.conversation_id: rank for rank, c in enumerate(semantic, 1)}
    by_id = {c.conversation_id: c for c in semantic}
    by_id.update({c.conversation_id: c for c in keyword})
    semantic_message = {c.conversation_id: c.message_id for c in semantic}
    fused = []
    for cid, candidate in by_id.items():
        kr, sr = keyword_ranks.get(cid), semantic_ranks.get(cid)
        score = (1.0 / (k + kr) if kr else 0.0) + (1.0 / (k + sr) if sr else 0.0)
        message = candidate.message_id if candidate.message_id is not None else semantic_message.get(cid)
        fused.append(Fused(cid, candidate.last_activity_at, message, score, kr, sr))
    fused.sort(key=lambda f: (f.score, f.last_activity_at, f.conversation_id), reverse=True)
    return fused
