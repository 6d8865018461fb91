"""Folders, pins and bookmarks in exports and imports (the Threadline format): a user's folder tree, and per
conversation where that user keeps it (folder path by names, pin position) and their bookmarks in it. An
import recreates them for the importing user: folders are matched by name along the path (created when
missing), so importing twice does not duplicate them."""

from __future__ import annotations

import uuid
from typing import Any

from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.errors import ThreadlineError
from threadline.ids import Kind, encode_id
from threadline.organise import folders, marks
from threadline.organise import mark_repository as mark_repo
from threadline.organise import repository as repo
from threadline.settings import Settings


def _folder_entry(row: Any, conversation_ids: list[str]) -> dict[str, Any]:
    return {
        "id": encode_id(Kind.FOLDER, row["id"]),
        "name": row["name"],
        "parent_id": encode_id(Kind.FOLDER, row["parent_id"]) if row["parent_id"] else None,
        "position": row["position"],
        "conversation_ids": conversation_ids,
    }


async def user_entries(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
    """Everything the user organised, for a data-access export: folders (with the conversations filed in
    each), pins in order, and every bookmark with its note."""
    filed: dict[uuid.UUID, list[str]] = {}
    for p in await repo.placements_of(db, tenant_id, user_id):
        filed.setdefault(p["folder_id"], []).append(encode_id(Kind.CONVERSATION, p["conversation_id"]))
    return {
        # The whole tree, parents before children, siblings in order.
        "folders": [
            _folder_entry(r, filed.get(r["id"], [])) for r in await repo.folders_of(db, tenant_id, user_id)
        ],
        "pins": [
            {"conversation_id": encode_id(Kind.CONVERSATION, p["conversation_id"]), "position": p["position"]}
            for p in await mark_repo.pins_of(db, tenant_id, user_id)
        ],
        "bookmarks": [
            {
                "conversation_id": encode_id(Kind.CONVERSATION, b["conversation_id"]),
                "message_id": encode_id(Kind.MESSAGE, b["message_id"]),
                "note": b["note"],
                "created_at": b["created_at"].isoformat(),
            }
            for b in await mark_repo.all_bookmarks_of(db, tenant_id, user_id)
        ],
    }


async def conversation_entry(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> dict[str, Any] | None:
    """Where the user keeps one conversation and their bookmarks in it; None when they did nothing with it."""
    placed = await repo.folders_of_conversations(db, tenant_id, user_id, [conversation_id])
    path: list[str] | None = None
    if placed:
        by_id = {r["id"]: r for r in await repo.folders_of(db, tenant_id, user_id)}
        path = []
        current: uuid.UUID | None = placed[0]["id"]
        while current is not None:
            path.insert(0, by_id[current]["name"])
            current = by_id[current]["parent_id"]
    pins = await mark_repo.pin_positions(db, tenant_id, user_id, [conversation_id])
    bookmarks = [
        {
            "message_id": encode_id(Kind.MESSAGE, b["message_id"]),
            "note": b["note"],
            "created_at": b["created_at"].isoformat(),
        }
        for b in await mark_repo.bookmarks_in(db, tenant_id, user_id, conversation_id)
    ]
    if path is None and not pins and not bookmarks:
        return None
    return {"folder": path, "pinned": pins[0]["position"] if pins else None, "bookmarks": bookmarks}


# Bookmarks on messages missing from the import named in a warning each; the rest are counted in one more (a
# warning each made the report several times the size of the file).
WARNED_MISSING_MAX = 16


def _names(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not value or not all(isinstance(n, str) and n.strip() for n in value):
        return None
    return [n.strip() for n in value]


async def restore(
    db: Database,
    settings: Settings,
    principal: Principal,
    conversation_id: uuid.UUID,
    entry: dict[str, Any],
    message_ids: dict[str, uuid.UUID],
) -> list[str]:
    """Recreate an exported `organisation` entry for the importing user; what could not be restored, as
    warnings (a bound reached, a bookmarked message that was not imported)."""
    warnings: list[str] = []
    try:
        names = _names(entry.get("folder"))
        if names is not None:
            folder_id = await folders.ensure_path(db, settings, principal, names)
            await folders.file_conversation(db, principal, conversation_id, folder_id)
        pinned = entry.get("pinned")
        if isinstance(pinned, int) and not isinstance(pinned, bool) and pinned >= 0:
            await marks.pin(db, settings, principal, conversation_id, pinned)
    except ThreadlineError as exc:
        warnings.append(f"folder or pin not restored: {exc.message}")
    for message_id, note in _bookmarks(entry.get("bookmarks"), message_ids, settings, warnings).items():
        try:
            await marks.bookmark(db, settings, principal, message_id, note)
        except ThreadlineError as exc:
            warnings.append(f"bookmark not restored: {exc.message}")
    return warnings


def _bookmarks(
    value: Any, message_ids: dict[str, uuid.UUID], settings: Settings, warnings: list[str]
) -> dict[uuid.UUID, str | None]:
    """The bookmarks to restore: one per message (a repeated one keeps its last note, as setting it again
    would), at most THREADLINE_BOOKMARKS_MAX. Each costs a transaction: a file naming one message a million
    times must not cost a million (an export holds one entry per bookmark, and a user no more than the max)."""
    entries = value if isinstance(value, list) else []
    if len(entries) > settings.bookmarks_max:
        warnings.append(
            f"{len(entries) - settings.bookmarks_max} bookmarks not restored: a user keeps at most "
            f"{settings.bookmarks_max} (THREADLINE_BOOKMARKS_MAX)"
        )
        entries = entries[: settings.bookmarks_max]
    wanted: dict[uuid.UUID, str | None] = {}
    missing: set[str] = set()
    for raw in entries:
        if not isinstance(raw, dict):
            continue
        named = str(raw.get("message_id"))
        message_id = message_ids.get(named)
        if message_id is None:
            if named not in missing:
                missing.add(named)
                if len(missing) <= WARNED_MISSING_MAX:
                    warnings.append(
                        f"bookmark on {raw.get('message_id')!r} not restored: no such message in the import"
                    )
            continue
        note = raw.get("note")
        wanted[message_id] = note if isinstance(note, str) else None
    if len(missing) > WARNED_MISSING_MAX:
        warnings.append(
            f"{len(missing) - WARNED_MISSING_MAX} more bookmarks not restored: no such messages in the import"
        )
    return wanted
