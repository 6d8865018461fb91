"""Query and Mutation fields of folders, pins and bookmarks: each user's own view of the conversations."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from threadline.conversations.types import Conversation
from threadline.graphql.arguments import given
from threadline.graphql.context import Info
from threadline.graphql.node import register
from threadline.graphql.pagination import (
    After,
    Connection,
    First,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.idempotency.schema import run_once
from threadline.idempotency.types import ClientMutationId
from threadline.ids import Kind, decode_id
from threadline.organise import folders, loaders, marks
from threadline.organise import mark_repository as mark_repo
from threadline.organise.types import Bookmark, Folder, FolderDeleteResult

FolderId = Annotated[
    strawberry.ID, strawberry.argument(description="One of the caller's folders (`Folder.id`).")
]
ConversationId = Annotated[
    strawberry.ID, strawberry.argument(description="A conversation the caller may read (`Conversation.id`).")
]
MessageId = Annotated[
    strawberry.ID, strawberry.argument(description="A message the caller may read (`Message.id`).")
]
Position = Annotated[
    int | None,
    strawberry.argument(
        description="Where among its siblings (0 is first); past the end or omitted: last. Negative is "
        "BAD_USER_INPUT."
    ),
]


@strawberry.type
class OrganiseQuery:
    @strawberry.field(
        description="The caller's folder tree: the root folders in order, each with its `children`. The whole "
        "tree (at most 500 folders, THREADLINE_FOLDERS_MAX) is read in one statement."
    )
    async def folders(self, info: Info) -> list[Folder]:
        rows = await loaders.folder_tree(info)
        return [Folder.from_row(r) for r in rows if r["parent_id"] is None]

    @strawberry.field(description="One of the caller's folders (NOT_FOUND for anyone else's).")
    async def folder(self, info: Info, id: FolderId) -> Folder | None:
        principal = await info.context.principal()
        return Folder.from_row(await folders.get(info.context.db, principal, decode_id(id, Kind.FOLDER)))

    @strawberry.field(
        description="The caller's bookmarks, newest first, in conversations they may still read."
    )
    async def bookmarks(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        conversation_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only bookmarks in this conversation (which the caller may read)."
            ),
        ] = None,
    ) -> Connection[Bookmark]:
        principal = await info.context.principal()
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        conversation = decode_id(conversation_id, Kind.CONVERSATION) if conversation_id else None
        db = info.context.db
        rows = await marks.bookmarks_page(db, principal, conversation, limit + 1, cursor)
        return connection(
            rows,
            limit,
            Bookmark.from_row,
            lambda r: (r["created_at"], r["id"]),
            lambda: mark_repo.count_visible_bookmarks(db, principal, conversation),
            has_previous=cursor is not None,
        )


@strawberry.type
class OrganiseMutation:
    @strawberry.mutation(
        description="Create a folder of the caller's own, at the root or in `parentId`. At most 500 folders per "
        "user (THREADLINE_FOLDERS_MAX) and 8 levels deep (THREADLINE_FOLDER_DEPTH_MAX): more is BAD_USER_INPUT."
    )
    async def folder_create(
        self,
        info: Info,
        name: Annotated[str, strawberry.argument(description="1 to 200 characters, trimmed.")],
        parent_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="The parent folder (the caller's); the root when omitted."),
        ] = None,
        position: Position = None,
        client_mutation_id: ClientMutationId = None,
    ) -> Folder:
        principal = await info.context.principal()
        settings = info.context.settings
        parent = decode_id(parent_id, Kind.FOLDER) if parent_id else None
        done = await run_once(
            info,
            client_mutation_id,
            {"name": name, "parentId": parent_id, "position": position},
            lambda db: folders.create(db, settings, principal, name, parent, position),
            lambda row: [row["id"]],
        )
        row = (
            done.value
            if done.value is not None
            else await folders.get(info.context.db, principal, done.ids[0])
        )
        return Folder.from_row(row)

    @strawberry.mutation(description="Rename one of the caller's folders.")
    async def folder_rename(
        self,
        info: Info,
        id: FolderId,
        name: Annotated[str, strawberry.argument(description="The new name: 1 to 200 characters, trimmed.")],
    ) -> Folder:
        principal = await info.context.principal()
        row = await folders.rename(
            info.context.db, info.context.settings, principal, decode_id(id, Kind.FOLDER), name
        )
        return Folder.from_row(row)

    @strawberry.mutation(
        description="Move one of the caller's folders (with its subfolders) under another parent and/or to "
        "another position. Into itself or its own subtree (a cycle) is BAD_USER_INPUT, as is a move past the "
        "depth limit. Siblings are renumbered densely; concurrent moves keep every list consistent."
    )
    async def folder_move(
        self,
        info: Info,
        id: FolderId,
        parent_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="The new parent folder (the caller's); null or omitted: the root."
            ),
        ] = None,
        position: Position = None,
    ) -> Folder:
        principal = await info.context.principal()
        parent = decode_id(parent_id, Kind.FOLDER) if parent_id else None
        row = await folders.move(
            info.context.db, info.context.settings, principal, decode_id(id, Kind.FOLDER), parent, position
        )
        return Folder.from_row(row)

    @strawberry.mutation(
        description="Delete one of the caller's folders and its subfolders. The conversations in them are not "
        "deleted: they go back to the root."
    )
    async def folder_delete(self, info: Info, id: FolderId) -> FolderDeleteResult:
        principal = await info.context.principal()
        done = await folders.delete(info.context.db, principal, decode_id(id, Kind.FOLDER))
        return FolderDeleteResult(folders_deleted=done.folders, conversations_unfiled=done.conversations)

    @strawberry.mutation(
        description="File a conversation the caller may read in one of their folders, taking it out of any "
        "other folder of theirs (a conversation sits in at most one folder per user); `folderId: null` puts it "
        "back at the root. Other participants' folders are not affected."
    )
    async def conversation_file(
        self,
        info: Info,
        conversation_id: ConversationId,
        folder_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="The caller's folder; null to take the conversation out of folders."
            ),
        ] = strawberry.UNSET,
    ) -> Conversation:
        folder_id = given(folder_id, "folderId", "takes the conversation out of folders")
        principal = await info.context.principal()
        folder = decode_id(folder_id, Kind.FOLDER) if folder_id else None
        row = await folders.file_conversation(
            info.context.db, principal, decode_id(conversation_id, Kind.CONVERSATION), folder
        )
        return Conversation.from_row(row)

    @strawberry.mutation(
        description="Pin a conversation the caller may read at `position` of their pins (the end by default); "
        "pinning a pinned one moves it. At most 50 pins per user (THREADLINE_PINS_MAX). "
        "`conversations(pinnedFirst: true)` lists them first, in this order."
    )
    async def conversation_pin(
        self,
        info: Info,
        conversation_id: ConversationId,
        position: Annotated[
            int | None,
            strawberry.argument(
                description="Where among the caller's pins (0 is first); past the end or omitted: last."
            ),
        ] = None,
    ) -> Conversation:
        principal = await info.context.principal()
        row = await marks.pin(
            info.context.db,
            info.context.settings,
            principal,
            decode_id(conversation_id, Kind.CONVERSATION),
            position,
        )
        return Conversation.from_row(row)

    @strawberry.mutation(description="Unpin a conversation (a no-op if it was not pinned).")
    async def conversation_unpin(self, info: Info, conversation_id: ConversationId) -> Conversation:
        principal = await info.context.principal()
        row = await marks.unpin(info.context.db, principal, decode_id(conversation_id, Kind.CONVERSATION))
        return Conversation.from_row(row)

    @strawberry.mutation(
        description="Bookmark a message the caller may read, or change the note of their bookmark on it. At most "
        "10,000 bookmarks per user (THREADLINE_BOOKMARKS_MAX)."
    )
    async def bookmark_set(
        self,
        info: Info,
        message_id: MessageId,
        note: Annotated[
            str | None,
            strawberry.argument(
                description="An optional note, up to 2,000 characters; null or blank for none."
            ),
        ] = None,
    ) -> Bookmark:
        principal = await info.context.principal()
        row = await marks.bookmark(
            info.context.db, info.context.settings, principal, decode_id(message_id, Kind.MESSAGE), note
        )
        return Bookmark.from_row(row)

    @strawberry.mutation(
        description="Remove the caller's bookmark on a message (NOT_FOUND if there is none)."
    )
    async def bookmark_remove(self, info: Info, message_id: MessageId) -> bool:
        principal = await info.context.principal()
        return await marks.unbookmark(info.context.db, principal, decode_id(message_id, Kind.MESSAGE))


async def _folder_node(info: Info, folder_id: uuid.UUID) -> Folder:
    principal = await info.context.principal()
    return Folder.from_row(await folders.get(info.context.db, principal, folder_id))


register(Kind.FOLDER, _folder_node)
