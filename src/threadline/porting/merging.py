"""Merging newer exports into earlier imports (issue 22 item 1), many conversations in one transaction.

Messages are matched by their source id: a new one is placed in the tree under its parent (after the replies
already there, live ones included), a known one whose text changed is updated as an edit (`Message.edits` keeps
the earlier text), nothing is duplicated. Messages deleted in Threadline stay deleted. New messages are announced
as a bulk write announces them: a new thread as `thread.new`; in an existing thread, each new branch tip as a
`thread.activity` REPLY whose path names the new messages above it (one event per tip, not per message); an
update as an EDIT.

Set-based: whatever the number of conversations merged together, their parents are read (and locked) in one
statement, their counters, sequence numbers, messages (the bulk path's staged insert), child counts, thread
counters, participants and current leaves take one statement each; edits, which are rare, go one by one.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from threadline.conversations import repository as conversations
from threadline.db import Transaction
from threadline.events.announce import publish_branch_current, publish_thread_activity, publish_thread_new
from threadline.events.payloads import BranchCurrent, ThreadActivity, ThreadNew
from threadline.files import repository as file_repo
from threadline.porting import bulk_repository as bulk_repo
from threadline.porting import extras
from threadline.porting import repository as repo
from threadline.porting.importer import Plan, stage_record
from threadline.settings import Settings
from threadline.threads import branches
from threadline.threads import repository as threads_repo
from threadline.threads.service import announce_unread, follow_content, path_ids, snapshot
from threadline.threads.tree_rules import ROOT, TooDeep, reply_placement


@dataclass
class Merge:
    """What a re-import added to, and changed in, a conversation imported before."""

    added: int = 0
    updated: int = 0
    warnings: list[str] = field(default_factory=list)


class NotMergeable(Exception):
    """The conversation was imported before message source ids were recorded: nothing can be matched."""


@dataclass
class Target:
    """A planned newer export and the conversation it merges into, with that conversation's rows
    (repo.merge_targets) read under its lock. The caller has checked that the user manages it and it is open."""

    plan: Plan
    conversation_id: uuid.UUID
    existing: list[asyncpg.Record]
    record_origin: bool = False  # imported before origins were recorded: set it now
    result: Merge = field(default_factory=Merge)
    # Filled while placing: each plan row's place (existing rows only when they get replies), the new rows'
    # indexes, the existing rows whose text changed, and the new rows as written.
    node: list[dict[str, Any] | None] = field(default_factory=list)
    new: list[int] = field(default_factory=list)
    edits: list[tuple[asyncpg.Record, dict[str, Any]]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    known: list[asyncpg.Record | None] = field(default_factory=list)


def _digest(content: str) -> str:
    """The md5 PostgreSQL's md5(text) gives for the same text (UTF-8): compared, not trusted."""
    return hashlib.md5(content.encode(), usedforsecurity=False).hexdigest()


def stored_digest(row: asyncpg.Record) -> str:
    """The md5 of a stored message's text: PostgreSQL's, or, for a sealed row (crypto/), of its opened text
    (bulk_repository.SEALED_TEXT), so an unchanged message under encryption at rest compares equal."""
    sealed = row["sealed"]
    return _digest(sealed) if sealed is not None else str(row["digest"])


def _by_key(plan: Plan, existing: list[asyncpg.Record]) -> dict[str, asyncpg.Record]:
    by_key = {row["import_key"]: row for row in existing if row["import_key"] is not None}
    if existing and not by_key:
        raise NotMergeable(plan.external_id)
    return by_key


def unchanged(plan: Plan, existing: list[asyncpg.Record]) -> bool:
    """Whether a merge of `plan` into a conversation with these rows (repo.merge_targets) would change
    nothing: every message known, each text the same (or deleted here). Lets a re-import of an unchanged
    conversation skip the locking transaction. NotMergeable if its rows carry no source ids."""
    by_key = _by_key(plan, existing)
    for m in plan.messages:
        row = by_key.get(m["key"])
        if row is None or (not row["deleted"] and stored_digest(row) != _digest(m["content"])):
            return False
    return True


def _place(
    t: Target, settings: Settings, placed: dict[uuid.UUID, asyncpg.Record], child_count: dict[uuid.UUID, int]
) -> dict[uuid.UUID, int]:
    """Place the target's new messages in its tree (pure); the replies each existing parent gets."""
    grown: dict[uuid.UUID, int] = {}
    for index, m in enumerate(t.plan.messages):
        row = t.known[index]
        if row is not None:
            at = placed.get(row["id"])
            t.node.append(
                {"id": at["id"], "root_id": at["root_id"], "depth": at["depth"], "path": bytes(at["path"])}
                if at is not None
                else None
            )
            if not row["deleted"] and stored_digest(row) != _digest(m["content"]):
                t.edits.append((row, m))
            continue
        parent = t.node[m["parent_index"]] if m["parent_index"] >= 0 else None
        placement = ROOT
        if parent is not None:
            try:
                placement = reply_placement(
                    parent["depth"], parent["path"], child_count[parent["id"]], settings.thread_max_depth
                )
            except TooDeep as exc:
                # As in `importer.plan`: past the depth limit the conversation goes on as a new thread.
                t.result.warnings.append(
                    f"message {m['key']} would be {exc.depth} replies deep, past the limit of {exc.limit} "
                    "(THREADLINE_THREAD_MAX_DEPTH): it continues the conversation as a new thread"
                )
                parent = None
        if parent is not None:
            child_count[parent["id"]] += 1
            if parent["id"] in placed:
                grown[parent["id"]] = grown.get(parent["id"], 0) + 1
        row_id = uuid.uuid4()
        child_count[row_id] = 0
        t.node.append(
            {
                "id": row_id,
                "root_id": parent["root_id"] if parent else row_id,
                "parent_id": parent["id"] if parent else None,
                "depth": placement.depth,
                "path": placement.path,
            }
        )
        t.new.append(index)
    return grown


async def merge_many(
    tx: Transaction, settings: Settings, tenant_id: uuid.UUID, user_id: uuid.UUID, targets: list[Target]
) -> None:
    """Merge each target's newer export into its conversation, in the caller's transaction; each target's
    `result` says what was added and changed."""
    for t in targets:
        by_key = _by_key(t.plan, t.existing)
        t.known = [by_key.get(m["key"]) for m in t.plan.messages]
    # Existing messages that get new replies, in every conversation: their place in the tree, locked (one statement).
    wanted = {
        known[m["parent_index"]]["id"]
        for t in targets
        for known in [t.known]
        for i, m in enumerate(t.plan.messages)
        if known[i] is None and m["parent_index"] >= 0 and known[m["parent_index"]] is not None
    }
    placed = {row["id"]: row for row in await repo.merge_parents(tx, tenant_id, list(wanted))}
    child_count: dict[uuid.UUID, int] = {key: row["child_count"] for key, row in placed.items()}
    grown: dict[uuid.UUID, int] = {}
    for t in targets:
        grown.update(_place(t, settings, placed, child_count))
    edited = await _edit(tx, tenant_id, user_id, targets)
    for t in targets:
        if t.record_origin and t.plan.origin is not None and (t.new or t.edits):
            await repo.set_origin(
                tx, tenant_id, t.conversation_id, t.plan.origin
            )  # imported before it was recorded
        t.result.updated = len(t.edits)
        t.result.added = len(t.new)
    growing = [t for t in targets if t.new]
    if growing:
        await _insert(tx, tenant_id, user_id, growing, child_count, grown, placed)
    for row in edited:
        thread = await repo.merged_thread_activity(tx, tenant_id, row["root_id"], 0, None, None)
        (path,) = await path_ids(tx, tenant_id, [row])
        await publish_thread_activity(
            tx,
            tenant_id,
            ThreadActivity("EDIT", snapshot(row, path), thread["reply_count"], thread["last_activity_at"]),
        )
    await _move_current(tx, tenant_id, user_id, targets)


async def _edit(
    tx: Transaction, tenant_id: uuid.UUID, user_id: uuid.UUID, targets: list[Target]
) -> list[asyncpg.Record]:
    """Known messages whose text changed: updated as edits (the earlier text kept), with the newer parts. One
    deleted since its row was read (a delete takes the message's lock, not the conversation's) stays deleted: its
    tombstone takes no text, and it is no edit."""
    edited = []
    for t in targets:
        kept = []
        for row, m in t.edits:
            current = await threads_repo.message(tx, tenant_id, row["id"], lock=True)
            assert current is not None
            if current["deleted_at"] is not None:
                continue
            kept.append((row, m))
            await threads_repo.record_edit(tx, tenant_id, row["id"], current["content"], user_id)
            edited.append(await threads_repo.set_content(tx, tenant_id, row["id"], m["content"]))
            # The newer export's parts go with its text (content is their projection).
            await threads_repo.set_parts(tx, tenant_id, row["id"], m["parts"])
        t.edits = kept
    if edited:
        await follow_content(tx, tenant_id, edited)
    return edited


async def _insert(
    tx: Transaction,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    targets: list[Target],
    child_count: dict[uuid.UUID, int],
    grown: dict[uuid.UUID, int],
    placed: dict[uuid.UUID, asyncpg.Record],
) -> None:
    # Counters first (the conversation row lock orders these seqs after every earlier commit, as live writes).
    await bulk_repo.count_added(
        tx, tenant_id, [t.conversation_id for t in targets], [len(t.new) for t in targets]
    )
    seqs = await repo.next_seqs(tx, sum(len(t.new) for t in targets))
    start = 0
    for t in targets:
        messages = t.plan.messages
        order = sorted(t.new, key=lambda i: (messages[i]["created_at"], i))
        seq_of = dict(zip(order, seqs[start : start + len(order)], strict=True))
        start += len(order)
        for i in t.new:
            m, place = messages[i], t.node[i]
            assert place is not None
            t.rows.append(
                {
                    "id": place["id"],
                    "tenant_id": tenant_id,
                    "conversation_id": t.conversation_id,
                    "root_id": place["root_id"],
                    "parent_id": place["parent_id"],
                    "depth": place["depth"],
                    "path": place["path"],
                    "seq": seq_of[i],
                    "child_count": child_count[place["id"]],
                    "role": m["role"],
                    "content": m["content"],
                    "author_id": user_id if m["authored"] else None,
                    "model": m["model"],
                    "prompt_tokens": m["prompt_tokens"],
                    "completion_tokens": m["completion_tokens"],
                    "created_at": m["created_at"],
                    "edited_at": m["edited_at"],
                    "deleted_at": m["deleted_at"],
                    "usage_imported": m["usage_imported"],
                    "import_key": m["key"],
                    "metadata": m["metadata"] or None,
                    "parts": m["parts"],
                }
            )
    await bulk_repo.insert_messages(tx, tenant_id, [stage_record(r) for t in targets for r in t.rows])
    for t in targets:
        for i, row in zip(t.new, t.rows, strict=True):
            cut = t.plan.oversized.get(i)
            if cut is not None and cut.file_id is not None:
                await file_repo.attach(tx, tenant_id, row["id"], [cut.file_id])
        # The file's feedback on the new messages, as a first import writes it (their metadata went in with them).
        added = [{**t.plan.messages[i], "id": row["id"]} for i, row in zip(t.new, t.rows, strict=True)]
        await extras.write_imported(tx, tenant_id, user_id, t.conversation_id, None, added)
    if grown:
        await repo.add_child_counts(tx, tenant_id, list(grown), list(grown.values()))
    # Unread counts go to the other participants only: most imported conversations have none (one statement).
    participants = await conversations.participants_of(tx, tenant_id, [t.conversation_id for t in targets])
    readers = {p["conversation_id"] for p in participants if p["user_id"] != user_id}
    # New threads: a thread row and a thread.new each (with their replies counted), as a first import has them.
    records: list[tuple[Any, ...]] = []
    for t in targets:
        for root in (r for r in t.rows if r["parent_id"] is None):
            members = [r for r in t.rows if r["root_id"] == root["id"]]
            records.append(
                (
                    root["id"],
                    tenant_id,
                    t.conversation_id,
                    len(members) - 1,
                    max(r["seq"] for r in members),
                    root["created_at"],
                    max(r["created_at"] for r in members),
                )
            )
    await repo.copy_threads(tx, records)
    by_id = {r["id"]: r for t in targets for r in t.rows}
    for record in records:
        root = by_id[record[0]]
        await publish_thread_new(
            tx, tenant_id, ThreadNew(snapshot(root, [root["id"]]), record[3], root["created_at"])
        )
        if root["conversation_id"] in readers:
            await announce_unread(tx, tenant_id, root["conversation_id"], root["id"], user_id)
    # Replies in existing threads: a thread.activity REPLY for each new branch tip (a new reply that got no new
    # reply), oldest first. Its path names every message above it, so the new messages between it and the
    # messages there before are named too: a client fetches those it does not have (`message`, `threadTree`).
    # (One REPLY per new message cost a merge of 5,000 new messages ~0.45 s of CPU: each carried its ~55-id path.)
    replies = sorted((r for r in by_id.values() if r["root_id"] not in by_id), key=lambda r: r["seq"])
    parents = {r["parent_id"] for r in replies}
    tips = [r for r in replies if r["id"] not in parents]
    touched: dict[uuid.UUID, int] = {}
    last_seq: dict[uuid.UUID, int] = {}
    newest: dict[uuid.UUID, datetime] = {}
    for r in replies:
        touched[r["root_id"]] = touched.get(r["root_id"], 0) + 1
        last_seq[r["root_id"]] = max(last_seq.get(r["root_id"], 0), r["seq"])
        newest[r["root_id"]] = max(newest.get(r["root_id"], r["created_at"]), r["created_at"])
    # Every touched thread's counters, in every conversation, in one statement.
    threads = await repo.merged_threads_activity(
        tx,
        tenant_id,
        list(touched),
        list(touched.values()),
        [last_seq[k] for k in touched],
        [newest[k] for k in touched],
    )
    # Each reply's ancestors: a new row's are its parent's and the parent; those of the existing rows that got
    # replies (`placed`) are read once (one statement, by index look-ups of their ancestors' paths).
    existing_parents = dict.fromkeys(r["parent_id"] for r in replies if r["parent_id"] not in by_id)
    above = await bulk_repo.ancestor_ids(tx, tenant_id, [placed[p] for p in existing_parents])
    path_of: dict[uuid.UUID, list[uuid.UUID]] = dict(above)
    for r in sorted(replies, key=lambda r: r["depth"]):  # a parent before its replies
        parent_path = path_of.get(r["parent_id"])
        if parent_path is None:
            break
        path_of[r["id"]] = [*parent_path, r["id"]]
    if all(r["id"] in path_of for r in tips):
        paths = [path_of[r["id"]] for r in tips]
    else:  # an ancestor not found where its path says: ask the database, as live replies do
        paths = await path_ids(tx, tenant_id, tips)
    for r, path in zip(tips, paths, strict=True):
        thread = threads[r["root_id"]]
        await publish_thread_activity(
            tx,
            tenant_id,
            ThreadActivity("REPLY", snapshot(r, path), thread["reply_count"], thread["last_activity_at"]),
        )
    conversation_of = {r["root_id"]: r["conversation_id"] for r in replies}
    for root_id in touched:
        if conversation_of[root_id] in readers:
            await announce_unread(tx, tenant_id, conversation_of[root_id], root_id, user_id)


async def _move_current(
    tx: Transaction, tenant_id: uuid.UUID, user_id: uuid.UUID, targets: list[Target]
) -> None:
    """The newer exports' current_node: the importing owner moves there, as on a first import (each leaf's place
    is known from the rows read above), one statement for all; a `branch.current` for each that moved them."""
    leaves: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] = {}  # root -> (leaf, conversation)
    for t in targets:
        if t.plan.current is None:
            continue
        kept = t.known[t.plan.current]
        place = t.node[t.plan.current] if kept is None else {"id": kept["id"], "root_id": kept["root_id"]}
        if place is not None and (kept is None or not kept["deleted"]):
            leaves[place["root_id"]] = (place["id"], t.conversation_id)
    moved = await bulk_repo.move_current_leaves(
        tx, tenant_id, user_id, list(leaves), [leaf for leaf, _ in leaves.values()]
    )
    for root_id, message_id in moved:
        await publish_branch_current(
            tx,
            tenant_id,
            BranchCurrent(message_id, branches.IMPORT),
            conversation_id=leaves[root_id][1],
            root_id=root_id,
            recipient_id=user_id,
        )
