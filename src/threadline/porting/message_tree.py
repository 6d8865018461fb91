"""The message tree of a source whose messages name their parents (LibreChat, Open WebUI): repaired, walked
depth-first, empty messages left out with their replies moved up to the nearest kept ancestor.

Readers give every message of the file (None where a message has nothing to keep), its claimed parent and,
where the source has one, the order of each parent's replies; `arrange` returns the kept messages in the
order the importer wants them (a parent before its replies, siblings in branch order) with their parents
set, and where the source's user was (its current message, or the nearest kept ancestor of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from threadline.porting.model import ImportedMessage, settle_parents


@dataclass
class Arranged:
    messages: list[ImportedMessage]
    current_key: str | None
    skipped: list[str]  # empty messages left out


def arrange(
    keys: list[str],
    kept: dict[str, ImportedMessage | None],
    claimed: dict[str, str | None],
    warnings: list[str],
    *,
    order: Callable[[str], list[str]] | None = None,
    current: str | None = None,
) -> Arranged:
    """`keys` in file order; `kept[key]` the message or None (empty); `claimed[key]` its parent as the file
    says. `order(parent)` lists a parent's replies in the source's branch order (those that agree on the
    parent are kept in it, the others follow); without it, siblings go oldest first (file order for ties)."""
    parents = settle_parents(((k, claimed.get(k)) for k in keys), set(keys), "message", warnings)
    children: dict[str | None, list[str]] = {}
    for key in keys:
        children.setdefault(parents[key], []).append(key)
    if order is not None:
        for parent in list(children):
            if parent is None:
                continue
            listed = [c for c in dict.fromkeys(order(parent)) if parents.get(c) == parent]
            placed = set(listed)
            rest = [c for c in children[parent] if c not in placed]
            children[parent] = listed + rest
    else:
        for siblings in children.values():
            siblings.sort(key=lambda k: _oldest_first(kept[k]))
    # Roots oldest first, always: they are threads, and the file's order of them means nothing.
    children[None] = sorted(children.get(None, []), key=lambda k: _oldest_first(kept[k]))

    messages: list[ImportedMessage] = []
    current_key: str | None = None
    skipped: list[str] = []
    stack: list[tuple[str, str | None]] = [(k, None) for k in reversed(children[None])]
    seen: set[str] = set()
    while stack:
        key, kept_parent = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        message = kept[key]
        if message is None:
            skipped.append(key)
        else:
            message.parent_key = kept_parent
            messages.append(message)
            kept_parent = message.key
        if key == current:
            current_key = kept_parent
        for child in reversed(children.get(key, [])):
            stack.append((child, kept_parent))
    if skipped:
        warnings.append(
            f"{len(skipped)} empty message(s) skipped (no text, parts or files); their replies now answer the "
            f"message before them: {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}"
        )
    if current is not None and current not in seen:
        warnings.append(f"the current message {current} is not in the conversation; no current branch kept")
    return Arranged(messages, current_key, skipped)


def _oldest_first(message: ImportedMessage | None) -> tuple[bool, datetime | float]:
    created = message.created_at if message is not None else None
    return (created is None, created if created is not None else 0.0)
