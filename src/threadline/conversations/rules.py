"""Input normalisation for conversation fields (pure functions, no I/O)."""

from __future__ import annotations

from threadline.errors import bad_input
from threadline.settings import Settings

# The columns' own lengths (conversation.ai_provider, model, session_id): a longer value is refused when written,
# and a filter by one can match nothing, so it is refused too.
AI_PROVIDER_MAX_CHARS = 64
MODEL_MAX_CHARS = 128
SESSION_ID_MAX_CHARS = 255


def normalise_tags(tags: list[str], settings: Settings, argument: str = "tags") -> list[str]:
    """Trimmed, lower-case, deduplicated (first occurrence wins), bounded in length and count."""
    kept, too_long = tags_within(tags, settings)
    if too_long:
        raise bad_input(
            f"A tag is limited to {settings.tag_max_chars} characters (got {len(too_long[0])})",
            argument=argument,
        )
    if len(kept) > settings.tags_max_count:
        raise bad_input(
            f"A conversation may carry at most {settings.tags_max_count} tags (got {len(kept)})",
            argument=argument,
        )
    return kept


def tags_within(tags: list[str], settings: Settings) -> tuple[list[str], list[str]]:
    """`tags` trimmed, lower-case and deduplicated (first occurrence wins), and apart those longer than
    THREADLINE_TAG_MAX_CHARS (the count is the caller's to bound)."""
    seen: dict[str, None] = {}
    too_long: list[str] = []
    for raw in tags:
        tag = raw.strip().lower()
        if not tag:
            continue
        if len(tag) > settings.tag_max_chars:
            too_long.append(tag)
            continue
        seen.setdefault(tag, None)
    return list(seen), too_long


def normalise_title(title: str, settings: Settings) -> str:
    title = title.strip()
    if not title:
        raise bad_input("title must not be empty", argument="title")
    if len(title) > settings.title_max_chars:
        raise bad_input(
            f"title is limited to {settings.title_max_chars} characters (got {len(title)})", argument="title"
        )
    return title


def bounded_text(value: str | None, limit: int, argument: str) -> str | None:
    if value is None:
        return None
    if len(value) > limit:
        raise bad_input(
            f"{argument} is limited to {limit} characters (got {len(value)})", argument=argument, limit=limit
        )
    return value


def max_history(value: int, argument: str = "maxHistoryMessages") -> int:
    if not 1 <= value <= 10_000:
        raise bad_input(f"{argument} must be between 1 and 10000", argument=argument)
    return value
