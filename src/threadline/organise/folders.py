"""Folder rules: a user's own tree of folders (bounded count and depth), siblings kept in a dense order, and
where each conversation they may read sits (at most one folder; no row means the root).

Every write takes the user's organise lock first (`repository.lock_user`) and renumbers siblings from what it
then reads, so concurrent creates and moves leave each sibling list numbered 0..n-1 with no gaps or ties.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require
from threadline.db import Database, Executor
from threadline.errors import bad_input, not_found
from threadline.organise import repository as repo
from threadline.settings import Settings


@dataclass(frozen=True)
class FolderDeleted:
    folders: int  # the folder and its subfolders
    conversations: int  # placements removed: those conversations are back at the root


def folder_name(name: str, settings: Settings) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise bad_input("A folder needs a name", argument="name")
    if len(cleaned) > settings.folder_name_max_chars:
        raise bad_input(
            f"A folder name is at most {settings.folder_name_max_chars} characters",
            argument="name",
            limit=settings.folder_name_max_chars,
        )
    return cleaned


class Tree:
    """The user's folders as read under the lock: children per parent in order."""

    def __init__(self, rows: list[asyncpg.Record]) -> None:
        self.rows = {r["id"]: r for r in rows}
        self.children: dict[uuid.UUID | None, list[uuid.UUID]] = {}
        for r in sorted(rows, key=lambda r: (r["position"], r["created_at"], r["id"])):
            self.children.setdefault(r["parent_id"], []).append(r["id"])

    def require(self, folder_id: uuid.UUID) -> asyncpg.Record:
        row = self.rows.get(folder_id)
        if row is None:
            raise not_found("Folder")
        return row

    def subtree(self, folder_id: uuid.UUID) -> list[uuid.UUID]:
        found, todo = [], [folder_id]
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(self.children.get(current, []))
        return found

    def height(self, folder_id: uuid.UUID) -> int:
        """Levels in the subtree rooted here (1 for a folder without subfolders)."""
        kids = self.children.get(folder_id, [])
        return 1 + max((self.height(k) for k in kids), default=0)

    def places(
        self, parent_id: uuid.UUID | None, depth: int
    ) -> list[tuple[uuid.UUID, uuid.UUID | None, int, int]]:
        """(id, parent, position, depth) of every folder under `parent_id`, numbered densely from 0."""
        out: list[tuple[uuid.UUID, uuid.UUID | None, int, int]] = []
        for position, child in enumerate(self.children.get(parent_id, [])):
            out.append((child, parent_id, position, depth + 1))
            out.extend(self.places(child, depth + 1))
        return out


def _index(position: int | None, size: int) -> int:
    """Where to insert among `size` siblings: the end by default, clamped to the list."""
    if position is None:
        return size
    if position < 0:
        raise bad_input("`position` must not be negative", argument="position")
    return min(position, size)


async def _locked_tree(tx: Executor, principal: Principal) -> Tree:
    await repo.lock_user(tx, principal.tenant_id, principal.user_id)
    return Tree(await repo.folders_of(tx, principal.tenant_id, principal.user_id))


def _depth_of(tree: Tree, parent_id: uuid.UUID | None) -> int:
    return 0 if parent_id is None else int(tree.require(parent_id)["depth"])


async def create(
    db: Database,
    settings: Settings,
    principal: Principal,
    name: str,
    parent_id: uuid.UUID | None,
    position: int | None,
) -> asyncpg.Record:
    cleaned = folder_name(name, settings)
    async with db.transaction() as tx:
        tree = await _locked_tree(tx, principal)
        if len(tree.rows) >= settings.folders_max:
            raise bad_input(
                f"A user may have at most {settings.folders_max} folders",
                argument="name",
                limit=settings.folders_max,
            )
        depth = _depth_of(tree, parent_id) + 1
        if depth > settings.folder_depth_max:
            raise bad_input(
                f"Folders nest at most {settings.folder_depth_max} levels deep",
                argument="parentId",
                limit=settings.folder_depth_max,
            )
        siblings = tree.children.get(parent_id, [])
        index = _index(position, len(siblings))
        # Make room first: shift the siblings after the new one.
        shifted = [(sid, parent_id, n + 1, depth) for n, sid in enumerate(siblings) if n >= index]
        await repo.place_folders(tx, principal.tenant_id, principal.user_id, shifted)
        return await repo.insert_folder(
            tx,
            principal.tenant_id,
            principal.user_id,
            parent_id=parent_id,
            name=cleaned,
            position=index,
            depth=depth,
        )


async def move(
    db: Database,
    settings: Settings,
    principal: Principal,
    folder_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    position: int | None,
) -> asyncpg.Record:
    """Move a folder under `parent_id` (None: the root) at `position` among its new siblings."""
    async with db.transaction() as tx:
        tree = await _locked_tree(tx, principal)
        tree.require(folder_id)
        if parent_id is not None:
            tree.require(parent_id)
            if parent_id in tree.subtree(folder_id):
                raise bad_input(
                    "A folder cannot move into itself or one of its subfolders", argument="parentId"
                )
        if _depth_of(tree, parent_id) + tree.height(folder_id) > settings.folder_depth_max:
            raise bad_input(
                f"Folders nest at most {settings.folder_depth_max} levels deep",
                argument="parentId",
                limit=settings.folder_depth_max,
            )
        old_parent = tree.rows[folder_id]["parent_id"]
        tree.children[old_parent].remove(folder_id)
        siblings = tree.children.setdefault(parent_id, [])
        siblings.insert(_index(position, len(siblings)), folder_id)
        # Renumber both sibling lists and the moved subtree's depths from the tree as it now stands.
        places = tree.places(None, 0)
        await repo.place_folders(tx, principal.tenant_id, principal.user_id, places)
        (row,) = await repo.folders_by_id(tx, principal.tenant_id, principal.user_id, [folder_id])
        return row


async def rename(
    db: Database, settings: Settings, principal: Principal, folder_id: uuid.UUID, name: str
) -> asyncpg.Record:
    cleaned = folder_name(name, settings)
    async with db.transaction() as tx:
        row = await repo.rename_folder(tx, principal.tenant_id, principal.user_id, folder_id, cleaned)
    if row is None:
        raise not_found("Folder")
    return row


async def delete(db: Database, principal: Principal, folder_id: uuid.UUID) -> FolderDeleted:
    """Delete a folder and its subfolders; their conversations go back to the root (they are not deleted)."""
    async with db.transaction() as tx:
        tree = await _locked_tree(tx, principal)
        row = tree.require(folder_id)
        doomed = tree.subtree(folder_id)
        placed = await repo.delete_folders(tx, principal.tenant_id, principal.user_id, doomed)
        tree.children[row["parent_id"]].remove(folder_id)
        await repo.place_folders(tx, principal.tenant_id, principal.user_id, tree.places(None, 0))
    return FolderDeleted(len(doomed), placed)


async def get(db: Executor, principal: Principal, folder_id: uuid.UUID) -> asyncpg.Record:
    rows = await repo.folders_by_id(db, principal.tenant_id, principal.user_id, [folder_id])
    if not rows:
        raise not_found("Folder")
    return rows[0]


async def file_conversation(
    db: Database, principal: Principal, conversation_id: uuid.UUID, folder_id: uuid.UUID | None
) -> asyncpg.Record:
    """Put a conversation the caller may read in one of their folders (None: back to the root); the
    conversation row."""
    async with db.transaction() as tx:
        conversation = await require(tx, principal, conversation_id, Access.READ)
        if folder_id is None:
            await repo.unplace_conversation(tx, principal.tenant_id, principal.user_id, conversation_id)
        else:
            # Under the lock, so a concurrent delete of the folder cannot leave a placement behind.
            await repo.lock_user(tx, principal.tenant_id, principal.user_id)
            await get(tx, principal, folder_id)
            await repo.place_conversation(
                tx, principal.tenant_id, principal.user_id, conversation_id, folder_id
            )
    return conversation


async def ensure_path(db: Database, settings: Settings, principal: Principal, names: list[str]) -> uuid.UUID:
    """The caller's folder at this path of names from the root, creating the missing ones (imports)."""
    parent: uuid.UUID | None = None
    for name in names:
        cleaned = folder_name(name, settings)
        async with db.transaction() as tx:
            tree = await _locked_tree(tx, principal)
            found = [c for c in tree.children.get(parent, []) if tree.rows[c]["name"] == cleaned]
        parent = found[0] if found else (await create(db, settings, principal, cleaned, parent, None))["id"]
    assert parent is not None
    return parent
