"""Markdown export: a conversation as a person reads it.

By default each thread shows the reader's current branch (threads.branches: the leaf they are on, or the
newest branch when they chose none; the operator, who is no user, gets the newest). With `all_branches`, every
message of every thread appears depth-first, numbered by its place in the tree (`1`, `1.1`, `1.2`: the second
reply to the first message starts another branch), and a message that does not follow its parent says which
one it answers. Links to and from other conversations the reader may read are listed at the top.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from threadline.audit.service import Actor, AuditAction
from threadline.auth import repository as users
from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require
from threadline.db import Database
from threadline.errors import not_found
from threadline.ids import Kind, encode_id
from threadline.links.service import links_for_export
from threadline.porting import repository as repo
from threadline.porting import request_limits
from threadline.porting.service import audited_export
from threadline.privacy.reading import masked_rows, reader_for
from threadline.threads import branches

# Who no user is (the operator's export): no current leaf of theirs exists, so every thread shows its newest branch.
NOBODY = uuid.UUID(int=0)
ROLES = {"USER": "User", "ASSISTANT": "Assistant", "SYSTEM": "System", "TOOL": "Tool"}
LINKS_OUT = {"RELATED": "Related to", "CONTINUES": "Continues", "CITES": "Cites", "DUPLICATE": "Duplicates"}
LINKS_IN = {
    "RELATED": "Related to",
    "CONTINUES": "Continued by",
    "CITES": "Cited by",
    "DUPLICATE": "Duplicated by",
}


@dataclass(frozen=True)
class MarkdownExport:
    text: str
    messages: int


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value is not None else "unknown time"


def _line(text: str) -> str:
    """Text that must stay on one line (a heading, a list item)."""
    return " ".join(text.split())


def _labels(rows: Sequence[asyncpg.Record]) -> dict[uuid.UUID, str]:
    """Each message's place in its thread's tree: `1`, `1.1`, `1.2`, ... (rows are depth-first)."""
    labels: dict[uuid.UUID, str] = {}
    children: dict[uuid.UUID, int] = {}
    for row in rows:
        parent = row["parent_id"]
        if parent is None or parent not in labels:
            labels[row["id"]] = "1"
            continue
        children[parent] = children.get(parent, 0) + 1
        labels[row["id"]] = f"{labels[parent]}.{children[parent]}"
    return labels


def _message(
    row: asyncpg.Record,
    label: str | None,
    follows_parent: bool,
    parent_label: str | None,
    author: str | None,
) -> str:
    role = ROLES.get(row["role"], row["role"].title())
    parts = [f"{role} ({_line(author)})" if author else role]
    if row["model"]:
        # An imported model name may hold newlines: the heading stays one line.
        parts.append(_line(row["model"]))
    parts.append(_when(row["created_at"]))
    if row["edited_at"] is not None and row["deleted_at"] is None:
        parts.append("edited")
    heading = "### " + (f"{label} " if label else "") + " · ".join(parts)
    lines = [heading, ""]
    if parent_label is not None and not follows_parent:
        lines += [f"_In reply to {parent_label}._", ""]
    content = "_This message was deleted._" if row["deleted_at"] is not None else row["content"].strip()
    lines += [content or "_(empty)_", ""]
    return "\n".join(lines)


def render(
    conversation: asyncpg.Record,
    rows: Sequence[asyncpg.Record],
    links: list[dict[str, Any]],
    *,
    all_branches: bool,
    exported_at: datetime,
    authors: dict[uuid.UUID, str] | None = None,
) -> str:
    """The Markdown text; `authors` names the writers of messages by their display names."""
    authors = authors or {}
    out = [f"# {_line(conversation['title']) or 'Untitled conversation'}", ""]
    if conversation["description"]:
        out += [conversation["description"].strip(), ""]
    facts = [
        f"- **Conversation:** `{encode_id(Kind.CONVERSATION, conversation['id'])}`",
        f"- **Created:** {_when(conversation['created_at'])}; "
        f"**last activity:** {_when(conversation['last_activity_at'])}",
    ]
    if conversation["tags"]:
        facts.append("- **Tags:** " + ", ".join(conversation["tags"]))
    if conversation["model"]:
        facts.append(f"- **Model:** {_line(conversation['model'])}")
    shown = "every branch of each thread" if all_branches else "the current branch of each thread"
    facts.append(f"- **Exported:** {_when(exported_at)}, showing {shown}")
    out += [*facts, ""]
    if links:
        out += ["## Linked conversations", ""]
        for link in links:
            kind = link["kind"].upper()
            outgoing = link["direction"] == "out"
            verb = (LINKS_OUT if outgoing else LINKS_IN).get(kind, kind.title())
            other = link["to_id"] if outgoing else link["from_id"]
            out.append(f"- {verb} **{_line(link['title'])}** (`{other}`)")
        out.append("")
    labels = _labels(rows) if all_branches else {}
    thread = 0
    previous: uuid.UUID | None = None
    for row in rows:
        if row["parent_id"] is None:
            thread += 1
            out += [f"## Thread {thread}", ""]
        parent = row["parent_id"]
        out.append(
            _message(
                row,
                labels.get(row["id"]),
                follows_parent=parent is None or parent == previous,
                parent_label=labels.get(parent) if all_branches and parent is not None else None,
                # Only people are named: an assistant's reply posted by a client carries the client's user.
                author=authors.get(row["author_id"]) if row["role"] == "USER" and row["author_id"] else None,
            )
        )
        previous = row["id"]
    if not rows:
        out += ["_No messages._", ""]
    return "\n".join(out).rstrip() + "\n"


async def export_markdown(
    db: Database,
    principal: Principal | Actor,
    conversation_id: uuid.UUID,
    *,
    all_branches: bool = False,
    max_messages: int | None = None,
) -> MarkdownExport:
    """A conversation the caller may read, as Markdown; audited like the Threadline export. `max_messages`: as
    `exporter.export_conversation`'s."""
    reader = principal if isinstance(principal, Principal) else None
    if reader is not None:
        row = await require(db, reader, conversation_id, Access.READ)
    else:
        found = await repo.conversation_row(db, principal.tenant_id, conversation_id)
        if found is None:
            raise not_found("Conversation")
        row = found
    request_limits.check_export_messages(row["message_count"], max_messages)
    tenant = principal.tenant_id
    rows = await repo.conversation_messages(db, tenant, conversation_id)
    if not all_branches:
        roots = [r["id"] for r in rows if r["parent_id"] is None]
        user_id = reader.user_id if reader is not None else NOBODY
        paths = await branches.current_paths(db, tenant, user_id, roots)
        keep = {m["id"] for path in paths.values() for m in path}
        rows = [r for r in rows if r["id"] in keep]
    links = await links_for_export(db, tenant, reader, conversation_id)
    if reader is not None:
        rows = masked_rows(reader_for(reader), rows)  # privacy: MASK_ON_READ
    # Who wrote what, by display name (never an email: a person reads this file, maybe not a participant).
    writers = list({r["author_id"] for r in rows if r["author_id"] is not None})
    authors = {
        u["id"]: u["display_name"] for u in await users.users_by_ids(db, tenant, writers) if u["display_name"]
    }
    text = render(row, rows, links, all_branches=all_branches, exported_at=datetime.now(UTC), authors=authors)
    await audited_export(
        db,
        principal,
        AuditAction.CONVERSATION_EXPORT,
        (Kind.CONVERSATION, conversation_id),
        {"messages": len(rows), "format": "markdown"},
    )
    return MarkdownExport(text, len(rows))
