"""Branches as a user lives them: the current leaf per user and thread, and new siblings.

A thread is a tree; a client shows one branch of it, root -> leaf. Each user has a *current leaf* per
thread (`thread_current_leaf`):

- `threadSetCurrent` puts them on any message of the thread;
- a reply they write (or send as an edited branch) moves them to it; a run they started moves them to its
  answer as soon as the answer exists (so the streaming answer is on the branch they see), and the finished
  run leaves them there;
- deleting the message someone is on moves them to its parent (a deleted root: back to the default);
- an imported ChatGPT conversation keeps the export's `current_node` as the importing owner's leaf, and a
  merge re-import of a newer export moves them to its `current_node`.

Without a row the thread shows its newest branch: from the root, the newest reply at every level (the
greatest path, tombstones left out). Every move is announced to that user alone as `branch.current`; a reply
under a message that had replies already is announced to everyone as `branch.sibling`.

`current_leaf` and `current_path` are the service functions other packages call (the OpenAI-compatible
gateway reads "the current branch" with them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from threadline.db import Executor
from threadline.events.announce import publish_branch_current, publish_branch_sibling
from threadline.events.payloads import BranchCurrent, BranchSibling
from threadline.threads import branch_repository as repo
from threadline.threads.paths import ancestor_paths

SET = "SET"
REPLY = "REPLY"
RUN = "RUN"
DELETE = "DELETE"
IMPORT = "IMPORT"


async def current_leaves(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, bytes]]:
    """Each thread's current leaf for the user as (id, path), in one statement; a thread whose messages are all
    deleted is on its root."""
    rows = await repo.current_leaves(db, tenant_id, user_id, list(root_ids))
    return {
        r["root_id"]: (r["id"], bytes(r["path"])) if r["id"] is not None else (r["root_id"], b"")
        for r in rows
    }


async def current_leaf(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_id: uuid.UUID
) -> uuid.UUID:
    """The message the user is on in the thread of `root_id` (which the caller has checked they may read)."""
    return (await current_leaves(db, tenant_id, user_id, [root_id]))[root_id][0]


async def current_paths(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[asyncpg.Record]]:
    """Each thread's current branch, root first and the leaf last, as `TREE_COLUMNS` rows: two statements for
    any number of threads (the leaves, then every message on their paths by (root, path))."""
    leaves = await current_leaves(db, tenant_id, user_id, root_ids)
    wanted_roots: list[uuid.UUID] = []
    wanted_paths: list[bytes] = []
    for root_id, (_, path) in leaves.items():
        for p in [*ancestor_paths(path), path] if path else [b""]:
            wanted_roots.append(root_id)
            wanted_paths.append(p)
    paths: dict[uuid.UUID, list[asyncpg.Record]] = {root_id: [] for root_id in root_ids}
    if wanted_roots:
        for row in await repo.tree_rows_at(db, tenant_id, wanted_roots, wanted_paths):
            paths[row["root_id"]].append(row)
    return paths


async def current_path(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_id: uuid.UUID
) -> list[asyncpg.Record]:
    """The user's current branch of one thread, root first (`TREE_COLUMNS` rows)."""
    return (await current_paths(db, tenant_id, user_id, [root_id]))[root_id]


async def move_current(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, message: asyncpg.Record, reason: str
) -> None:
    """Put the user on `message` (a row of its thread) and tell their streams, if that moved them."""
    if await repo.set_current_leaf(tx, tenant_id, user_id, message["root_id"], message["id"]):
        await publish_branch_current(
            tx,
            tenant_id,
            BranchCurrent(message["id"], reason),
            conversation_id=message["conversation_id"],
            root_id=message["root_id"],
            recipient_id=user_id,
        )


async def leave_deleted(tx: Executor, tenant_id: uuid.UUID, deleted: asyncpg.Record) -> None:
    """Whoever was on a message that was just deleted moves to its parent (a root: back to the default)."""
    parent_id = deleted["parent_id"]
    for row in await repo.move_leaves_off(tx, tenant_id, deleted["id"], parent_id):
        await publish_branch_current(
            tx,
            tenant_id,
            BranchCurrent(parent_id, DELETE),
            conversation_id=deleted["conversation_id"],
            root_id=row["root_id"],
            recipient_id=row["user_id"],
        )


async def announce_sibling(tx: Executor, tenant_id: uuid.UUID, reply: asyncpg.Record, rank: int) -> None:
    """A `branch.sibling` when `reply` (at `rank` under its parent) is not its parent's first reply."""
    if rank == 0 or reply["parent_id"] is None:
        return
    await publish_branch_sibling(
        tx,
        tenant_id,
        BranchSibling(reply["parent_id"], reply["id"], rank, rank + 1),
        conversation_id=reply["conversation_id"],
        root_id=reply["root_id"],
    )
