"""Feedback bounds: a rating, at most 10 reasons of up to 64 characters, a comment of up to 2,000."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from threadline.errors import bad_input

RATINGS = ("UP", "DOWN")
REASONS_MAX = 10
REASON_MAX_CHARS = 64
COMMENT_MAX_CHARS = 2_000


@dataclass(frozen=True)
class Feedback:
    rating: str
    reasons: list[str]
    comment: str


def validated(rating: str, reasons: list[str] | None, comment: str | None) -> Feedback:
    if rating not in RATINGS:
        raise bad_input("rating must be UP or DOWN (or null to remove the feedback)", argument="rating")
    # In order, duplicates dropped; refused at the first reason past the bound, so a list of a million distinct
    # reasons costs eleven, not a million list scans of a growing list (it held the event loop for hours).
    kept: dict[str, None] = {}
    for reason in reasons or []:
        reason = reason.strip()
        if not reason or "\x00" in reason:
            raise bad_input("reasons must be non-empty text", argument="reasons")
        if len(reason) > REASON_MAX_CHARS:
            raise bad_input(
                f"a reason is limited to {REASON_MAX_CHARS} characters (got {len(reason)})",
                argument="reasons",
                limit=REASON_MAX_CHARS,
            )
        kept[reason] = None
        if len(kept) > REASONS_MAX:
            raise bad_input(
                f"at most {REASONS_MAX} reasons are allowed", argument="reasons", limit=REASONS_MAX
            )
    text = comment or ""
    if len(text) > COMMENT_MAX_CHARS:
        raise bad_input(
            f"comment is limited to {COMMENT_MAX_CHARS} characters (got {len(text)})",
            argument="comment",
            limit=COMMENT_MAX_CHARS,
        )
    if "\x00" in text:
        raise bad_input("comment must not contain NUL characters", argument="comment")
    return Feedback(rating, list(kept), text)


def imported(value: Any, where: str, warnings: list[str]) -> Feedback | None:
    """The exporting user's feedback on a message, read from an export file: None if absent; dropped with a
    warning if it breaks the bounds (an import repairs rather than refuses)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        warnings.append(f"{where}: feedback is not an object and was dropped")
        return None
    rating = value.get("rating")
    reasons = value.get("reasons") or []
    comment = value.get("comment") or ""
    try:
        if not isinstance(rating, str) or not isinstance(reasons, list) or not isinstance(comment, str):
            raise ValueError
        if not all(isinstance(r, str) for r in reasons):
            raise ValueError
        return validated(rating.upper(), reasons, comment)
    except Exception:  # noqa: BLE001 - a ThreadlineError or a wrong type: either way the entry is not kept
        warnings.append(f"{where}: feedback out of bounds was dropped")
        return None
