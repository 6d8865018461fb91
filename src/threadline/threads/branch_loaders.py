"""Request-wide loaders of branches (graphql/loaders.py): where messages sit among their siblings, pages of
siblings, and the viewer's current branch of threads. Each is one or two statements for a whole response,
however many messages or threads ask. Rows come back as stored; threads/types.py builds the objects."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.graphql.context import Info
from threadline.graphql.loaders import grouped_loader, single_loader
from threadline.threads import branch_repository as repo
from threadline.threads import branches
from threadline.threads.paths import ancestor_paths, encode_rank, parent_path, sibling_rank


async def sibling_info(info: Info, message_id: uuid.UUID) -> asyncpg.Record | None:
    """(id, root_id, path, sibling_count) of a message."""
    (found,) = await _infos(info, [message_id])
    return found


async def siblings(
    info: Info, message_id: uuid.UUID, limit: int, after_rank: int | None
) -> list[asyncpg.Record]:
    """Up to `limit` other replies to the message's parent after rank `after_rank`, oldest first
    (`MESSAGE_COLUMNS` rows). Siblings are found by their paths (the parent's path plus each rank), so a page
    reads `limit` rows by the (root_id, path) index however many replies the parent has."""
    principal = await info.context.principal()
    db = info.context.db

    async def fetch(ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, asyncpg.Record]]:
        wanted: dict[uuid.UUID, list[tuple[uuid.UUID, bytes]]] = {}
        for message_id, found in zip(ids, await _infos(info, ids), strict=True):
            if found is None or not bytes(found["path"]):
                continue  # a root has no siblings
            path = bytes(found["path"])
            own, parent = sibling_rank(path), parent_path(path)
            start = -1 if after_rank is None else after_rank
            # One more than the page (to tell a next page), and one more again in case this message is in it.
            ranks = [r for r in range(start + 1, min(start + limit + 3, found["sibling_count"])) if r != own]
            wanted[message_id] = [(found["root_id"], parent + encode_rank(r)) for r in ranks[: limit + 1]]
        pairs = [pair for keys in wanted.values() for pair in keys]
        if not pairs:
            return []
        rows = await repo.message_rows_at(
            db, principal.tenant_id, [p[0] for p in pairs], [p[1] for p in pairs]
        )
        by_place = {(r["root_id"], bytes(r["path"])): r for r in rows}
        return [
            (message_id, by_place[place])
            for message_id, keys in wanted.items()
            for place in keys
            if place in by_place
        ]

    loader = grouped_loader(info, f"siblings:{limit}:{after_rank}", fetch, key=lambda pair: pair[0])
    return [row for _, row in await loader.load(message_id)]


async def _infos(info: Info, ids: list[uuid.UUID]) -> list[asyncpg.Record | None]:
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "sibling-info",
        lambda keys: repo.sibling_info(db, principal.tenant_id, keys),
        key=lambda row: row["id"],
    )
    return list(await loader.load_many(ids))


async def current_leaf(info: Info, root_id: uuid.UUID) -> tuple[uuid.UUID, bytes]:
    """The viewer's current leaf in a thread as (id, path): one statement for every thread a response asks."""
    principal = await info.context.principal()
    db = info.context.db

    async def fetch(root_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, tuple[uuid.UUID, bytes]]]:
        leaves = await branches.current_leaves(db, principal.tenant_id, principal.user_id, root_ids)
        return list(leaves.items())

    loader = single_loader(info, "current-leaf", fetch, key=lambda pair: pair[0])
    found = await loader.load(root_id)
    assert found is not None
    return found[1]


async def path_rows(info: Info, root_id: uuid.UUID, leaf_path: bytes) -> list[asyncpg.Record]:
    """The messages from a thread's root to the one at `leaf_path`, root first (`TREE_COLUMNS` rows): one statement
    for every path a response asks."""
    principal = await info.context.principal()
    db = info.context.db

    async def fetch(
        keys: list[tuple[uuid.UUID, bytes]],
    ) -> list[tuple[tuple[uuid.UUID, bytes], asyncpg.Record]]:
        # One leaf per thread in an operation (the viewer's): rows are told apart by their root (tree rows carry
        # no path), and come root by root, each root first.
        leaves = dict(keys)
        wanted = [
            (root, at)
            for root, leaf in leaves.items()
            for at in ([*ancestor_paths(leaf), leaf] if leaf else [b""])
        ]
        rows = await repo.tree_rows_at(
            db, principal.tenant_id, [w[0] for w in wanted], [w[1] for w in wanted]
        )
        return [((row["root_id"], leaves[row["root_id"]]), row) for row in rows]

    loader = grouped_loader(info, "current-path-rows", fetch, key=lambda pair: pair[0])
    return [row for _, row in await loader.load((root_id, leaf_path))]
