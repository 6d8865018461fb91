"""The thread tree read (`threadTree`): which rows a caller gets for a thread or a subtree, in one place.

The rows come back depth-first with the ancestor ids of the first one; the GraphQL layer charges the
operation's output budget for them and only then builds messages (threads/resolvers.py, threads/types.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from threadline.auth.principal import Principal
from threadline.db import Executor
from threadline.errors import not_found
from threadline.threads import repository as repo
from threadline.threads.service import path_ids, readable_message

# The depth column is an integer: any larger bound means the whole subtree anyway.
_DEPTH_MAX = 2**31 - 1


@dataclass(frozen=True)
class TreeRows:
    rows: list[asyncpg.Record]  # `repo.TREE_COLUMNS`, depth-first, siblings oldest first, the top first
    top_path: list[uuid.UUID]  # the top row's ancestor ids from the root, ending with its own id


async def thread_tree(
    db: Executor, principal: Principal, root_id: uuid.UUID, max_depth: int | None, from_id: uuid.UUID | None
) -> TreeRows:
    """The subtree under `root_id` (or under `from_id`, a descendant of it) down to `max_depth` levels
    below its top; NOT_FOUND unless the caller may read the message, or if `from_id` is not under it.
    Three statements at most whatever the size of the tree."""
    top = await readable_message(db, principal, root_id)
    if from_id is not None:
        start = await repo.message(db, principal.tenant_id, from_id)
        if (
            start is None
            or start["root_id"] != top["root_id"]
            or not bytes(start["path"]).startswith(bytes(top["path"]))
        ):
            raise not_found("Message")
        top = start
    (top_path,) = await path_ids(db, principal.tenant_id, [top])
    deepest = min(top["depth"] + max_depth, _DEPTH_MAX) if max_depth is not None else None
    rows = await repo.subtree(db, principal.tenant_id, top["root_id"], bytes(top["path"]), deepest)
    return TreeRows(rows, top_path)
