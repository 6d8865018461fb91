"""GraphQL types of import, export and data rights."""

from __future__ import annotations

from enum import Enum

import strawberry
from strawberry.scalars import JSON

from threadline.auth.types import User
from threadline.conversations.types import Conversation
from threadline.graphql.describe import describe_values


@strawberry.enum(name="ImportFormat", description="Formats `conversationImport` reads.")
class ImportFormatEnum(Enum):
    THREADLINE = "threadline"
    CHATGPT = "chatgpt"
    CLAUDE = "claude"
    LIBRECHAT = "librechat"
    OPENWEBUI = "openwebui"


describe_values(
    ImportFormatEnum,
    {
        "THREADLINE": "Threadline's own export format (`conversationExport`): one document or an array.",
        "CHATGPT": "The `conversations.json` of a ChatGPT data export: an array of conversations, or one.",
        "CLAUDE": "The `conversations.json` of a Claude data export: an array of conversations, or one.",
        "LIBRECHAT": "A LibreChat conversation export (its flat or `recursive` tree JSON): one conversation, or "
        "an array of them. Every branch is kept.",
        "OPENWEBUI": "An Open WebUI chat export (`chat-export-*.json`): an array of chats, or one. Every branch "
        "of `chat.history` is kept, and `currentId` becomes your current branch.",
    },
)


@strawberry.input(description="Conversations to import, as the decoded JSON of an export file.")
class ConversationImportInput:
    format: ImportFormatEnum | None = strawberry.field(
        default=None,
        description="THREADLINE (our export: one document or an array), CHATGPT (conversations.json: an array "
        "of conversations, or one), CLAUDE (conversations.json of a Claude export, or one conversation), "
        "LIBRECHAT (a LibreChat conversation export), OPENWEBUI (an Open WebUI chat export). Null or left out: "
        "detected from the keys of the data's first conversation (BAD_USER_INPUT when they match no format); "
        "`ConversationImportReport.format` says which was read.",
    )
    data: JSON = strawberry.field(
        description="The file's JSON. One request carries at most 8 MiB of it, 100 conversations and 10,000 "
        "messages by default (THREADLINE_IMPORT_API_MAX_*; more is BAD_USER_INPUT naming the limit, and nothing is "
        "imported) and draws one `mutations` unit per 100 conversations and messages. Larger files: use "
        "`threadline import`, which streams."
    )
    conversation_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Add the threads of a single imported conversation to this existing one instead of creating "
        "a new conversation. Only its owner (or a tenant admin) may: imported messages keep their original dates.",
    )


@strawberry.type(description="A conversation of the input that could not be imported.")
class ImportFailure:
    index: int = strawberry.field(
        description="Its position in the input (0-based); -1 for the file as a whole."
    )
    external_id: str | None = strawberry.field(description="Its id in the source, when it has one.")
    message: str = strawberry.field(description="Why it was refused.")


@strawberry.type(description="A conversation imported before that a re-import of a newer export merged into.")
class ImportMerge:
    conversation_id: strawberry.ID = strawberry.field(description="The conversation merged into.")
    external_id: str = strawberry.field(description="Its id in the source.")
    messages_added: int = strawberry.field(
        description="Messages new in the export, added under their parents in the tree."
    )
    messages_updated: int = strawberry.field(
        description="Messages whose text changed in the export, updated as edits (`Message.edits` keeps the "
        "earlier text)."
    )


@strawberry.type(
    description="What an import did: conversations created, merged into, already there, refused."
)
class ConversationImportReport:
    conversations: list[Conversation] = strawberry.field(
        description="Imported conversations, then merged ones, then those imported before and unchanged "
        "(re-imports return them, not copies)."
    )
    format: ImportFormatEnum = strawberry.field(
        description="The format the data was read as: the one given, or the one detected."
    )
    imported: int = strawberry.field(description="Conversations created now.")
    skipped: int = strawberry.field(
        description="Conversations you already imported earlier from the same source ids, unchanged by this import, "
        "and later copies of a conversation id that comes more than once in the input (only the first is imported; "
        "a copy that differs is named in warnings)."
    )
    merged: int = strawberry.field(
        description="Conversations you imported earlier that this (newer) export added messages to or changed "
        "messages of (see merges)."
    )
    failed: int = strawberry.field(
        description="Conversations refused (see failures); the others were imported."
    )
    message_count: int = strawberry.field(
        description="Messages created now (in new conversations and added by merges)."
    )
    messages_added: int = strawberry.field(description="Messages added to earlier imports by merges.")
    messages_updated: int = strawberry.field(
        description="Messages of earlier imports updated (as edits) by merges."
    )
    merges: list[ImportMerge] = strawberry.field(
        description="What was added and updated, per merged conversation."
    )
    failures: list[ImportFailure] = strawberry.field(description="Each refused conversation and why.")
    warnings: list[str] = strawberry.field(
        description="What was repaired on the way (missing parents, cycles, ...)."
    )


@strawberry.type(description="The result of erasing a user.")
class UserErasure:
    user_id: strawberry.ID = strawberry.field(description="The erased user's id (it no longer resolves).")
    placeholder: User | None = strawberry.field(
        description="The anonymous user now shown as author of their replies."
    )
    conversations_deleted: int = strawberry.field(description="Conversations they owned, hard-deleted.")
    messages_redacted: int = strawberry.field(description="Their messages elsewhere, emptied (tombstones).")
    messages_reassigned: int = strawberry.field(
        description="Their messages elsewhere, now authored by the placeholder."
    )


@strawberry.type(description="The tenant's retention policy.")
class RetentionPolicy:
    retention_days: int | None = strawberry.field(
        description="Conversations deleted or inactive for longer than this many days are hard-deleted by a "
        "background job; null keeps everything."
    )


@strawberry.enum(description="What `conversationExport` returns.")
class ConversationExportFormat(Enum):
    THREADLINE = "threadline"
    MARKDOWN = "markdown"


describe_values(
    ConversationExportFormat,
    {
        "THREADLINE": "The Threadline JSON document (every branch, runs, links; re-importable).",
        "MARKDOWN": "Markdown for people to read, as one JSON string: the current branch of each thread unless "
        "`allBranches` (then every branch, numbered by its place in the tree); links listed at the top.",
    },
)
