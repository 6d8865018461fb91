"""From an `ImportedConversation` to rows: the tree, its paths and counters, then one transaction.

Planning is pure and checks everything first (sizes, depth, tags), so a conversation either imports
whole or not at all. What would refuse it is repaired instead, each repair reported: a reply dated before
its parent follows it by a microsecond; a chain deeper than THREADLINE_THREAD_MAX_DEPTH goes on as a new
thread (a continuation) from the message that would pass it; a message over THREADLINE_MESSAGE_MAX_BYTES
keeps its first part as text and the whole text as an attached file (service.py stores it); text that was
UTF-8 read as Windows-1252 ("cafÃ©") is decoded again (ChatGPT and Claude files). Each message row gets what the threads domain maintains for live writes: the
materialised path and depth (threads.tree_rules, as for a live reply), root, child count;
each root gets a thread row (reply count, last seq, last activity); the conversation gets its message
and token counts. Rows go in through the bulk write path (COPY into a staging table, then one INSERT ... SELECT
that builds their search vectors: porting.bulk), many new conversations per transaction.
"""

from __future__ import annotations

import operator
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from threadline.conversations import repository as conversations
from threadline.conversations.rules import tags_within
from threadline.db import Transaction
from threadline.errors import ThreadlineError
from threadline.events.announce import publish_thread_new
from threadline.events.payloads import ThreadNew
from threadline.feedback import rules as feedback_rules
from threadline.files import repository as file_repo
from threadline.ids import Kind, encode_id
from threadline.metadata import rules as metadata_rules
from threadline.parts import model as message_parts
from threadline.porting import bulk_repository as bulk_repo
from threadline.porting import extras
from threadline.porting import repository as repo
from threadline.porting.model import (
    ImportedConversation,
    ImportedMessage,
    ImportFormat,
    Rejected,
    from_iso,
    repair_mojibake,
    settle_parents,
)
from threadline.settings import Settings
from threadline.threads import branch_repository as branch_repo
from threadline.threads.service import snapshot
from threadline.threads.tree_rules import ROOT, reply_placement


@dataclass
class Plan:
    source: str
    external_id: str
    conversation: dict[str, Any]
    # Message rows in depth-first order, without tenant, conversation, author and seq (added at insert).
    messages: list[dict[str, Any]]
    roots: list[int]  # indexes into messages
    attachments: list[tuple[int, int, dict[str, Any]]]  # (message index, position, data)
    warnings: list[str] = field(default_factory=list)
    current: int | None = None  # the message the source's user was on (index into messages), if known
    # Messages over the size limit (index into messages): their whole text, and the part kept as content.
    oversized: dict[int, Oversized] = field(default_factory=dict)
    # Where the conversation came from: {format, source_id, imported_at} (Conversation.importedFrom).
    origin: dict[str, Any] | None = None
    node_digests: dict[str, str] | None = (
        None  # the source's nodes as read (ImportedConversation.node_digests)
    )
    # The fingerprint of the file's item it was read from (porting.jsonstream.fingerprint), when it is the item's
    # only conversation: kept on its import_source, a re-import of the same bytes skips it unread (not digested,
    # compared or planned).
    fingerprint: bytes | None = None


@dataclass
class Oversized:
    """A message over THREADLINE_MESSAGE_MAX_BYTES: its whole text goes to an attached file."""

    whole: str
    head: str  # its first part, within the limit
    filename: str
    file_id: uuid.UUID | None = None  # once stored (service.py)


def _clip(value: str | None, limit: int, name: str, warnings: list[str]) -> str | None:
    if value is not None and len(value) > limit:
        warnings.append(f"{name} was cut to {limit} characters")
        return value[:limit]
    return value


def _clean_text(message: ImportedMessage, warnings: list[str]) -> str:
    content = message.content
    if "\x00" in content:
        content = content.replace("\x00", "\ufffd")
        warnings.append(f"message {message.key}: NUL characters replaced")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        content = content.encode("utf-8", "replace").decode("utf-8")
        warnings.append(f"message {message.key}: invalid characters replaced")
    return content


def oversized_note(size: int, filename: str | None) -> str:
    """What follows the first part of a message cut at the size limit."""
    where = f"the whole text is in the attached file {filename}" if filename else "the rest could not be kept"
    return f"\n\n[cut: this message is {size:,} bytes, over the size limit; {where}]"


def _cut(key: str, content: str, settings: Settings, warnings: list[str]) -> Oversized | None:
    """A message over the size limit: its first part (with a note) as content, the whole text for a file."""
    size = len(content.encode("utf-8"))
    limit = settings.message_max_bytes
    if size <= limit:
        return None
    from threadline.files.service import clean_filename

    filename = clean_filename(f"message-{key[:100]}.txt")
    # The parts' strings count against the limit too (validate_parts): the text part's type and note, and the
    # file part as it will be once its file is stored (a file id is "fil_" and 32 hex digits).
    file_part = message_parts.file_part(name=filename, file_id="fil_" + "0" * 32, mime_type="text/plain")
    fixed = [*(v for v in file_part.values() if isinstance(v, str)), "text", oversized_note(size, filename)]
    room = limit - sum(len(v.encode("utf-8")) for v in fixed)
    head = content.encode("utf-8")[: max(0, room)].decode("utf-8", "ignore")
    warnings.append(
        f"message {key}: {size} bytes, over the limit of {limit} bytes (THREADLINE_MESSAGE_MAX_BYTES): its first "
        f"{len(head.encode('utf-8'))} bytes are its text, the whole text the attached file {filename}"
    )
    return Oversized(content, head, filename)


def _repaired(message: ImportedMessage) -> bool:
    """Text of the message that was UTF-8 read as Windows-1252, decoded again in place; whether any was."""
    content = repair_mojibake(message.content)
    changed = content != message.content
    message.content = content
    for part in message.parts or []:
        for name in ("text", "content"):
            value = part.get(name)
            if isinstance(value, str) and not value.isascii():
                fixed = repair_mojibake(value)
                if fixed != value:
                    part[name] = fixed
                    changed = True
    return changed


def _clean_parts(
    message: ImportedMessage, settings: Settings, warnings: list[str]
) -> list[dict[str, Any]] | None:
    """A message's parts as they are stored, bounded as live input is; parts a file gets wrong are dropped
    (the text stays) and reported, rather than refusing the conversation."""
    if message.parts is None or message_parts.is_plain_text(message.parts):
        return None
    try:
        message_parts.validate_parts(message.parts, settings)
    except ThreadlineError as exc:
        warnings.append(f"message {message.key}: content parts not kept ({exc.message}); its text was kept")
        return None
    return message.parts


# The longest source id an import keeps (import_source.external_id): a longer one is refused while planning, as
# everything else that would refuse the conversation is; it failed at the insert, after the API's all-or-nothing
# check, and conversationImport answered without it as if it had been imported.
EXTERNAL_ID_MAX_CHARS = 255


def _imported_tags(tags: list[str], settings: Settings, warnings: list[str]) -> list[str]:
    """The conversation's tags as a live write keeps them (conversations.rules), those a live write would refuse
    left out with a warning (longer than THREADLINE_TAG_MAX_CHARS, past THREADLINE_TAGS_MAX_COUNT): a tag never
    costs the conversation."""
    kept, too_long = tags_within(tags, settings)
    if too_long:
        warnings.append(f"{len(too_long)} tag(s) over {settings.tag_max_chars} characters were left out")
    if len(kept) > settings.tags_max_count:
        warnings.append(
            f"{len(kept)} tags: the first {settings.tags_max_count} were kept (a conversation may carry at most "
            "that many)"
        )
    return kept[: settings.tags_max_count]


def plan(imported: ImportedConversation, settings: Settings) -> Plan:
    if len(imported.external_id) > EXTERNAL_ID_MAX_CHARS:
        raise Rejected(
            f"its id is {len(imported.external_id)} characters long; the longest an import keeps is "
            f"{EXTERNAL_ID_MAX_CHARS}"
        )
    warnings = list(imported.warnings)
    now = datetime.now(UTC)
    if imported.source is not ImportFormat.THREADLINE:
        # Our own exports are written as UTF-8 by us: only other tools' files are checked for mojibake.
        _repair_encoding(imported, warnings)
    by_key: dict[str, ImportedMessage] = {}
    for message in imported.messages:
        if message.key in by_key:
            warnings.append(f"message {message.key}: duplicate id, the later one was skipped")
            continue
        by_key[message.key] = message
    claimed = [(key, message.parent_key) for key, message in by_key.items()]
    parents = settle_parents(claimed, by_key, "message", warnings)

    children: dict[str | None, list[str]] = {}
    for key in by_key:
        children.setdefault(parents[key], []).append(key)

    messages: list[dict[str, Any]] = []
    roots: list[int] = []
    attachments: list[tuple[int, int, dict[str, Any]]] = []
    oversized: dict[int, Oversized] = {}
    fallback_time = imported.created_at or now
    early: list[tuple[str, float]] = []  # replies dated before their parent: (key, by how many seconds)
    # Threads in order, each depth-first: (key, parent row index or -1, rank among siblings, the row index of
    # the message it continues when it starts a continuation thread, else -1).
    threads: deque[tuple[str, int, int, int]] = deque((k, -1, 0, -1) for k in children.get(None, []))
    stack: list[tuple[str, int, int, int]] = []
    continued: list[tuple[str, int, int, int]] = []
    while stack or threads:
        if not stack:
            stack.append(threads.popleft())
        key, parent_index, rank, continues = stack.pop()
        message = by_key[key]
        parent = messages[parent_index] if parent_index >= 0 else None
        placement = (
            reply_placement(parent["depth"], parent["path"], rank, settings.thread_max_depth)
            if parent
            else ROOT
        )
        row_id = uuid.uuid4()
        before = parent if parent is not None else messages[continues] if continues >= 0 else None
        created = message.created_at or (before["created_at"] if before else fallback_time)
        if before is not None and created < before["created_at"]:
            # 2025 exports date a question ~80 ms after its answer: a reply never precedes what it answers.
            early.append((key, (before["created_at"] - created).total_seconds()))
            created = before["created_at"] + timedelta(microseconds=1)
        index = len(messages)
        content = _clean_text(message, warnings)
        cut = _cut(key, content, settings, warnings)
        kept_parts = _clean_parts(message, settings, warnings) if cut is None else None
        if cut is not None:
            oversized[index] = cut
            content = cut.head + oversized_note(len(content.encode("utf-8")), cut.filename)
            kept_parts = [
                message_parts.text_part(content),
                message_parts.file_part(name=cut.filename, mime_type="text/plain"),
            ]
            if message.parts is not None and not message_parts.is_plain_text(message.parts):
                warnings.append(f"message {key}: its content parts were not kept (over the size limit)")
        kids = children.get(key, [])
        deepest = placement.depth >= settings.thread_max_depth and bool(kids)
        if deepest:
            warnings.append(
                f"message {key} is {placement.depth} replies deep, the limit (THREADLINE_THREAD_MAX_DEPTH): the "
                f"conversation goes on in a new thread from each of its replies ({', '.join(kids[:5])}"
                f"{', ...' if len(kids) > 5 else ''})"
            )
        messages.append(
            {
                "id": row_id,
                "key": key,
                "parent_index": parent_index,
                "root_index": parent["root_index"] if parent else index,
                "parent_id": parent["id"] if parent else None,
                "depth": placement.depth,
                "path": placement.path,
                "child_count": 0 if deepest else len(kids),
                "role": message.role,
                "content": content,
                "parts": kept_parts,
                "model": _clip(message.model, 128, f"message {key}: model", warnings),
                "prompt_tokens": message.prompt_tokens,
                "completion_tokens": message.completion_tokens,
                "created_at": created,
                "edited_at": message.edited_at,
                "deleted_at": message.deleted_at,
                "authored": message.role == "USER" if message.authored is None else message.authored,
                "usage_imported": message.prompt_tokens is not None or message.completion_tokens is not None,
                "metadata": metadata_rules.imported(message.metadata, f"message {key}", warnings),
                "feedback": feedback_rules.imported(message.feedback, f"message {key}", warnings),
                "feedback_times": _feedback_times(message.feedback),
            }
        )
        if parent is None:
            roots.append(index)
        for position, data in enumerate(message.attachments):
            attachments.append((index, position, data))
        if deepest:
            # Each reply starts a thread of its own, right after this one (its rows stay one run).
            continued.extend((kid, -1, 0, index) for kid in kids)
        else:
            for child_rank in range(len(kids) - 1, -1, -1):
                stack.append((kids[child_rank], index, child_rank, -1))
        if not stack and continued:
            threads.extendleft(reversed(continued))
            continued = []
    if early:
        keys = ", ".join(k for k, _ in early[:5]) + (", ..." if len(early) > 5 else "")
        warnings.append(
            f"{len(early)} repl{'y was' if len(early) == 1 else 'ies were'} dated before the message answered "
            f"(by up to {max(d for _, d in early):.3f} s): each now follows it by a microsecond, so no reply is "
            f"listed before it: {keys}"
        )

    tags = _imported_tags(imported.tags, settings, warnings)
    times = [m["created_at"] for m in messages]
    created_at = imported.created_at or (min(times) if times else now)
    last_activity = imported.last_activity_at or max([created_at, *times])
    title = (imported.title or "").strip() or "Untitled conversation"
    conversation = {
        "title": _clip(title, settings.title_max_chars, "title", warnings),
        "description": _clip(imported.description, settings.description_max_chars, "description", warnings),
        "tags": tags,
        "status": imported.status,
        "session_id": _clip(imported.session_id, 255, "session_id", warnings),
        "ai_provider": _clip(imported.ai_provider, 64, "ai_provider", warnings),
        "model": _clip(imported.model, 128, "model", warnings),
        "max_history_messages": imported.max_history_messages or 20,
        "message_count": len(messages),
        # Usage in a file is self-reported: kept on each message (flagged as imported) but never counted as
        # the conversation's spend, which only Threadline's own runs and live messages add to.
        "token_count": 0,
        "created_at": created_at,
        "updated_at": imported.updated_at or last_activity,
        "last_activity_at": last_activity,
        # Not a column insert_imported_conversation writes: porting.extras does, after it.
        "metadata": metadata_rules.imported(imported.metadata, "conversation", warnings),
    }
    current = [i for i, m in enumerate(messages) if m["key"] == imported.current_key]
    return Plan(
        imported.source.value,
        imported.external_id,
        conversation,
        messages,
        roots,
        attachments,
        warnings,
        current=current[0] if current else None,
        oversized=oversized,
        origin=_origin(imported, now, warnings),
        node_digests=imported.node_digests,
    )


def _origin(imported: ImportedConversation, now: datetime, warnings: list[str]) -> dict[str, Any] | None:
    """Where the conversation came from: this import for another tool's file, the origin a Threadline file
    carries (kept across servers), none for a Threadline file without one (it began in Threadline)."""
    if imported.source is not ImportFormat.THREADLINE:
        return {
            "format": imported.source.value,
            "source_id": imported.external_id,
            "imported_at": now.isoformat(),
        }
    carried = imported.origin
    if carried is None:
        return None
    fmt, source_id, at = carried.get("format"), carried.get("source_id"), from_iso(carried.get("imported_at"))
    known = {f.value for f in ImportFormat} - {ImportFormat.THREADLINE.value}
    if fmt not in known or not isinstance(source_id, str) or not 0 < len(source_id) <= 255 or at is None:
        warnings.append("conversation.imported_from is not a known format, source id and time: dropped")
        return None
    return {"format": fmt, "source_id": source_id, "imported_at": at.isoformat()}


def _repair_encoding(imported: ImportedConversation, warnings: list[str]) -> None:
    repaired = [m.key for m in imported.messages if _repaired(m)]
    title = repair_mojibake(imported.title)
    description = repair_mojibake(imported.description)
    fields = [
        name
        for name, old, new in (
            ("title", imported.title, title),
            ("description", imported.description, description),
        )
        if old != new
    ]
    imported.title, imported.description = title, description
    if repaired or fields:
        where = [*fields, *(f"message {k}" for k in repaired[:5])]
        more = ", ..." if len(repaired) > 5 else ""
        warnings.append(
            f"mojibake (UTF-8 read as Windows-1252, such as 'Ã©' for 'é') repaired in {len(fields) + len(repaired)} "
            f"place(s): {', '.join(where)}{more}"
        )


def _feedback_times(raw: Any) -> tuple[datetime | None, datetime | None]:
    if not isinstance(raw, dict):
        return None, None
    return from_iso(raw.get("created_at")), from_iso(raw.get("updated_at"))


class AlreadyImported(Exception):
    """Another import of the same source item committed first."""


async def insert(
    tx: Transaction,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    plan: Plan,
    target: asyncpg.Record | None = None,
) -> uuid.UUID:
    """Insert a planned conversation (or add its threads to `target`); returns the conversation id."""
    messages = plan.messages
    if target is None:
        conversation_id = uuid.uuid4()
        seqs = await repo.insert_imported_conversation(
            tx,
            tenant_id,
            user_id,
            plan.source,
            plan.external_id,
            len(messages),
            id=conversation_id,
            imported_from=plan.origin,
            node_digests=plan.node_digests,
            **plan.conversation,
        )
        if seqs is None:
            raise AlreadyImported(plan.external_id)
    else:
        conversation_id = target["id"]
        if not await repo.claim_source(
            tx, tenant_id, user_id, plan.source, plan.external_id, conversation_id
        ):
            raise AlreadyImported(plan.external_id)
        seqs = await repo.next_seqs(tx, len(messages))
    if messages:
        records, seq_of = message_rows(plan, conversation_id, user_id, seqs)
        await bulk_repo.insert_messages(tx, tenant_id, records)
        await _attach_whole_texts(tx, tenant_id, plan, {i: m["id"] for i, m in enumerate(messages)})
        await repo.copy_threads(tx, thread_records(plan, tenant_id, conversation_id, seq_of))
        if plan.current is not None:
            # The importing owner is where the source's user was (ChatGPT's current_node): their current leaf.
            leaf = messages[plan.current]
            root_id = messages[leaf["root_index"]]["id"]
            await branch_repo.set_current_leaf(tx, tenant_id, user_id, root_id, leaf["id"])
        await bulk_repo.insert_attachments(
            tx,
            tenant_id,
            [
                {"message_id": messages[i]["id"], "position": position, "data": data}
                for i, position, data in plan.attachments
            ],
        )
    await extras.write_imported(
        tx,
        tenant_id,
        user_id,
        conversation_id,
        plan.conversation.get("metadata") if target is None else None,
        messages,
    )
    if target is not None:
        await conversations.touch_activity(
            tx, tenant_id, conversation_id, len(messages), plan.conversation["token_count"]
        )
        # The conversation already has readers: announce each new thread as threadStart would.
        for index in plan.roots:
            root = {**messages[index], "conversation_id": conversation_id, "root_id": messages[index]["id"]}
            root["author_id"] = user_id if root["authored"] else None
            thread = ThreadNew(
                snapshot(root, [root["id"]]), _subtree_size(plan, index) - 1, root["created_at"]
            )
            await publish_thread_new(tx, tenant_id, thread)
    return conversation_id


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


_STAGED = operator.itemgetter(*bulk_repo.MESSAGE_STAGE_COLUMNS)
_JSON_COLUMNS = [bulk_repo.MESSAGE_STAGE_COLUMNS.index(c) for c in ("metadata", "parts")]


def stage_record(row: dict[str, Any]) -> tuple[Any, ...]:
    """A message row (keys of bulk_repository.MESSAGE_STAGE_COLUMNS) as it is staged."""
    values = list(_STAGED(row))
    for i in _JSON_COLUMNS:
        values[i] = _json(values[i])
    return tuple(values)


def message_rows(
    plan: Plan, conversation_id: uuid.UUID, user_id: uuid.UUID, seqs: list[int]
) -> tuple[list[tuple[Any, ...]], list[int]]:
    """The staged rows of a planned conversation, and each message's seq (`seqs`, ascending, are given out in
    the messages' time order, so "oldest first" by seq matches the source's chronology)."""
    messages = plan.messages
    order = sorted(range(len(messages)), key=lambda i: (messages[i]["created_at"], i))
    seq_of = [0] * len(messages)
    for i, seq in zip(order, seqs, strict=True):
        seq_of[i] = seq
    records = []
    for i, m in enumerate(messages):
        records.append(
            (
                m["id"], conversation_id, messages[m["root_index"]]["id"], m["parent_id"], m["depth"], m["path"],
                seq_of[i], m["child_count"], m["role"], m["content"], user_id if m["authored"] else None,
                m["model"], m["prompt_tokens"], m["completion_tokens"], m["created_at"], m["edited_at"],
                m["deleted_at"], m["usage_imported"], m["key"], _json(m["metadata"] or None), _json(m["parts"]),
            )
        )  # fmt: skip
    return records, seq_of


def keep_whole_text(plan: Plan, index: int, file_id: uuid.UUID | None, failure: str | None = None) -> None:
    """Record where an oversized message's whole text was stored (service.py stores it before the import's
    transaction): its file part names the file; without one the note says the rest could not be kept."""
    cut = plan.oversized[index]
    row = plan.messages[index]
    if file_id is not None:
        cut.file_id = file_id
        row["parts"][1]["file_id"] = encode_id(Kind.FILE, file_id)
        return
    size = len(cut.whole.encode("utf-8"))
    row["content"] = cut.head + oversized_note(size, None)
    row["parts"] = None
    plan.warnings.append(f"message {row['key']}: the whole text could not be stored as a file ({failure})")


async def _attach_whole_texts(
    tx: Transaction, tenant_id: uuid.UUID, plan: Plan, inserted: dict[int, uuid.UUID]
) -> None:
    """The inserted oversized messages hold the files of their whole texts."""
    for index, cut in plan.oversized.items():
        if cut.file_id is not None and index in inserted:
            await file_repo.attach(tx, tenant_id, inserted[index], [cut.file_id])


def _subtree_size(plan: Plan, root_index: int) -> int:
    later = [r for r in plan.roots if r > root_index]
    return (later[0] if later else len(plan.messages)) - root_index


def thread_records(
    plan: Plan, tenant_id: uuid.UUID, conversation_id: uuid.UUID, seq_of: list[int]
) -> list[tuple[Any, ...]]:
    # Messages are depth-first, so each thread is the run of rows from its root to the next root.
    bounds = [*plan.roots, len(plan.messages)]
    records = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        root = plan.messages[start]
        records.append(
            (
                root["id"],
                tenant_id,
                conversation_id,
                end - start - 1,
                max(seq_of[start:end]),
                root["created_at"],
                max(m["created_at"] for m in plan.messages[start:end]),
            )
        )
    return records
