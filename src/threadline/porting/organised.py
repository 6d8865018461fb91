"""After a Threadline import: the importing user's folders, pin and bookmarks, and the links between
conversations, recreated from the documents' `organisation` and `links` (what could not be: warnings).

A link's ends are the file's conversations (mapped to what they were imported as) or, failing that,
conversations of the tenant under the same id (an export re-imported where it came from); either end
unreadable by the importing user is a warning, as it would be NOT_FOUND through the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from threadline.auth.principal import Principal
from threadline.db import Database
from threadline.errors import ThreadlineError
from threadline.ids import Kind, parse_id
from threadline.links import service as links
from threadline.organise import portable
from threadline.organise import repository as organise_repo
from threadline.porting import repository as repo
from threadline.porting.model import ImportedConversation, ImportFormat
from threadline.settings import Settings


@dataclass
class Organised:
    """What an import run keeps of each document to restore after it (not its messages)."""

    entries: list[tuple[str, dict[str, Any] | None, list[dict[str, Any]]]] = field(default_factory=list)

    def keep(self, conversation: ImportedConversation) -> None:
        if conversation.organisation or conversation.links:
            self.entries.append((conversation.external_id, conversation.organisation, conversation.links))


def _kind(value: Any) -> links.LinkKind | None:
    try:
        return links.LinkKind(str(value).upper())
    except ValueError:
        return None


async def restore(
    db: Database, settings: Settings, principal: Principal, fmt: ImportFormat, kept: Organised
) -> list[str]:
    if not kept.entries:
        return []
    known = await repo.imported_conversations(
        db, principal.tenant_id, principal.user_id, fmt.value, [e[0] for e in kept.entries]
    )
    imported: dict[str, uuid.UUID] = {external: row["conversation_id"] for external, row in known.items()}

    def resolve(value: Any) -> uuid.UUID | None:
        if not isinstance(value, str):
            return None
        if value in imported:
            return imported[value]
        parsed = parse_id(value)
        return parsed[1] if parsed is not None and parsed[0] is Kind.CONVERSATION else None

    warnings: list[str] = []
    for external_id, organisation, link_entries in kept.entries:
        conversation_id = imported.get(external_id)
        if conversation_id is None:  # refused: the report says why
            continue
        if organisation:
            message_ids = await organise_repo.imported_message_ids(db, principal.tenant_id, conversation_id)
            for warning in await portable.restore(
                db, settings, principal, conversation_id, organisation, message_ids
            ):
                warnings.append(f"{external_id}: {warning}")
        # Each link appears in the documents of both its ends: restored from either, once (links are unique).
        for entry in link_entries[: 2 * settings.links_max]:
            kind = _kind(entry.get("kind"))
            outgoing = entry.get("direction") != "in"
            other = resolve(entry.get("to_id") if outgoing else entry.get("from_id"))
            if kind is None or other is None:
                warnings.append(f"{external_id}: link {entry.get('id')!r} not restored: malformed")
                continue
            ends = (conversation_id, other) if outgoing else (other, conversation_id)
            try:
                await links.link(db, settings, principal, ends[0], ends[1], kind)
            except ThreadlineError as exc:
                warnings.append(f"{external_id}: link {entry.get('id')!r} not restored: {exc.message}")
    return warnings
