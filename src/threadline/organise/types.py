"""GraphQL types of folders and bookmarks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import asyncpg
import strawberry

from threadline.graphql.context import Info
from threadline.graphql.node import Node
from threadline.ids import Kind, encode_id
from threadline.organise import loaders

if TYPE_CHECKING:
    from threadline.threads.types import Message


@strawberry.type(
    description="A folder of the caller's own (folders are per user: each participant organises their own view). "
    "Nestable, ordered among its siblings by `position`."
)
class Folder(Node):
    name: str = strawberry.field(description="The folder's name: 1 to 200 characters, trimmed.")
    position: int = strawberry.field(
        description="Its place among its siblings, from 0 (dense: siblings are numbered 0, 1, 2, ...)."
    )
    depth: int = strawberry.field(description="1 for a folder at the root, 2 for its subfolders, and so on.")
    parent_id: strawberry.ID | None = strawberry.field(
        description="The parent folder's id; null at the root."
    )
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it was last renamed or moved.")
    uuid: strawberry.Private[uuid.UUID]

    @strawberry.field(
        description="Its subfolders in order. The caller's whole tree is read once per request, however deep "
        "the query."
    )
    async def children(self, info: Info) -> list[Folder]:
        return [Folder.from_row(r) for r in await loaders.folder_tree(info) if r["parent_id"] == self.uuid]

    @strawberry.field(
        description="How many conversations the caller filed here (not counting subfolders) and may still read. "
        "Counted for every folder of the response in one statement."
    )
    async def conversation_count(self, info: Info) -> int:
        return await loaders.folder_conversation_count(info, self.uuid)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Folder:
        return cls(
            id=strawberry.ID(encode_id(Kind.FOLDER, row["id"])),
            uuid=row["id"],
            name=row["name"],
            position=row["position"],
            depth=row["depth"],
            parent_id=strawberry.ID(encode_id(Kind.FOLDER, row["parent_id"])) if row["parent_id"] else None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@strawberry.type(description="What `folderDelete` removed.")
class FolderDeleteResult:
    folders_deleted: int = strawberry.field(
        description="The folder and its subfolders: how many were deleted."
    )
    conversations_unfiled: int = strawberry.field(
        description="Conversations that were in them: now back at the root (they are not deleted)."
    )


@strawberry.type(description="A message the caller bookmarked, with their note. Bookmarks are per user.")
class Bookmark(Node):
    note: str | None = strawberry.field(
        description="The caller's note, up to 2,000 characters; null if none."
    )
    created_at: datetime = strawberry.field(description="When the message was bookmarked.")
    updated_at: datetime = strawberry.field(description="When the note last changed.")
    message_id: strawberry.ID = strawberry.field(description="The bookmarked message's id.")
    conversation_id: strawberry.ID = strawberry.field(description="The id of the message's conversation.")
    message_uuid: strawberry.Private[uuid.UUID]

    @strawberry.field(
        description="The bookmarked message (loaded for every bookmark of the response at once)."
    )
    async def message(
        self, info: Info
    ) -> Annotated[Message, strawberry.lazy("threadline.threads.types")] | None:
        from threadline.threads.types import Message

        found = await loaders.bookmarked_message(info, self.message_uuid)
        return Message.from_row(found[0], found[1]) if found is not None else None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Bookmark:
        return cls(
            id=strawberry.ID(encode_id(Kind.BOOKMARK, row["id"])),
            note=row["note"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            message_id=strawberry.ID(encode_id(Kind.MESSAGE, row["message_id"])),
            conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["conversation_id"])),
            message_uuid=row["message_id"],
        )


async def viewer_folder(info: Info, conversation_id: uuid.UUID) -> Folder | None:
    """`Conversation.folder`: the caller's folder of a conversation, for every conversation at once."""
    row = await loaders.conversation_folders(info, conversation_id)
    return Folder.from_row(row) if row is not None else None
