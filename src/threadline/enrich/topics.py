"""Most discussed topics: keywords counted over user messages, by conversation (a keyword a conversation repeats
counts once for it), with the conversations that mention each most recently as examples."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from threadline.enrich.text import keyword, words


@dataclass
class Topic:
    keyword: str
    conversations: int = 0
    messages: int = 0
    examples: list[uuid.UUID] = field(default_factory=list)


def topics(messages: Iterable[tuple[uuid.UUID, str]], limit: int, examples: int) -> list[Topic]:
    """`messages` newest first as (conversation id, text): the `limit` keywords named in the most conversations
    (then in the most messages, then alphabetically), each with up to `examples` conversations, newest first."""
    found: dict[str, Topic] = {}
    seen: set[tuple[str, uuid.UUID]] = set()
    for conversation_id, text in messages:
        keys = Counter(k for k in (keyword(w) for w in words(text)) if k is not None and len(k) >= 4)
        for key in keys:
            topic = found.get(key)
            if topic is None:
                topic = found[key] = Topic(key)
            topic.messages += 1
            if (key, conversation_id) not in seen:
                seen.add((key, conversation_id))
                topic.conversations += 1
                if len(topic.examples) < examples:
                    topic.examples.append(conversation_id)
    ranked = sorted(found.values(), key=lambda t: (-t.conversations, -t.messages, t.keyword))
    return [t for t in ranked if t.conversations > 1 or t.messages > 1][:limit]
