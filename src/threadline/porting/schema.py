"""Query and Mutation fields of export, import and retention (`userErase` is the users' domain: auth/schema.py)."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
import strawberry
from strawberry.scalars import JSON

from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, access_level
from threadline.conversations.types import Conversation
from threadline.errors import bad_input, forbidden
from threadline.graphql.arguments import given
from threadline.graphql.context import Info
from threadline.ids import Kind, decode_id, encode_id
from threadline.porting import detect, exporter, markdown, retention, service
from threadline.porting.model import ImportFormat
from threadline.porting.types import (
    ConversationExportFormat,
    ConversationImportInput,
    ConversationImportReport,
    ImportFailure,
    ImportFormatEnum,
    ImportMerge,
    RetentionPolicy,
)


async def _readable(info: Info, ids: list[uuid.UUID]) -> list[Conversation]:
    principal = await info.context.principal()
    rows = await conversations.conversations_with_access(
        info.context.db, principal.tenant_id, ids, principal.user_id
    )
    by_id = {r["id"]: r for r in rows if access_level(principal, r) >= Access.READ}
    return [Conversation.from_row(by_id[i]) for i in dict.fromkeys(ids) if i in by_id]


def _format(input: ConversationImportInput) -> ImportFormat:
    """The format given, or the one the data's first conversation shows (porting.detect)."""
    if input.format is not None:
        return ImportFormat(input.format.value)
    try:
        return detect.detect_value(input.data)
    except detect.UnknownFormat as exc:
        raise bad_input(str(exc), argument="format") from None


async def _import(
    info: Info, input: ConversationImportInput, *, all_or_nothing: bool
) -> tuple[ImportFormat, service.ImportReport]:
    principal = await info.context.principal()
    target = decode_id(input.conversation_id, Kind.CONVERSATION) if input.conversation_id else None
    fmt = _format(input)
    return fmt, await service.import_data(
        info.context.db,
        info.context.settings,
        principal,
        fmt,
        input.data,
        target_conversation_id=target,
        all_or_nothing=all_or_nothing,
    )


@strawberry.type
class PortingQuery:
    @strawberry.field(
        description="A conversation in the Threadline export format (every branch of every thread, runs, code "
        "files extracted, links). The format is documented by a JSON Schema in the repository. With `format: "
        "MARKDOWN`, the conversation as Markdown for people (a string). Audited."
    )
    async def conversation_export(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The conversation to export.")],
        format: Annotated[
            ConversationExportFormat,
            strawberry.argument(
                description="THREADLINE (the default): the JSON document; MARKDOWN: a JSON string of Markdown."
            ),
        ] = ConversationExportFormat.THREADLINE,
        all_branches: Annotated[
            bool,
            strawberry.argument(
                description="MARKDOWN only: every branch of every thread instead of the caller's current branch "
                "of each (the Threadline format always holds every branch)."
            ),
        ] = False,
    ) -> JSON:
        principal = await info.context.principal()
        conversation_id = decode_id(id, Kind.CONVERSATION)
        if format is ConversationExportFormat.MARKDOWN:
            done = await markdown.export_markdown(
                info.context.db,
                principal,
                conversation_id,
                all_branches=all_branches,
                max_messages=info.context.settings.query_max_messages,
            )
            return done.text  # type: ignore[return-value]
        return await exporter.export_conversation(  # type: ignore[return-value]
            info.context.db, principal, conversation_id, max_messages=info.context.settings.query_max_messages
        )

    @strawberry.field(
        description="Everything a user owns or wrote, for a data-access request (admins for anyone, users for "
        "themselves). Large exports: use `threadline export --user`. Audited."
    )
    async def user_export(
        self,
        info: Info,
        user_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The user whose data to export (`User.id`); yours, or anyone's for admins."
            ),
        ],
    ) -> JSON:
        principal = await info.context.principal()
        limit = info.context.settings.response_max_bytes
        chunks: list[bytes] = []
        held = 0

        def collect(chunk: bytes) -> None:
            # Stopped as soon as it passes what one response may carry: everything a user wrote was read whole
            # into memory (then decoded, then encoded again) before the response's own limit refused it.
            nonlocal held
            held += len(chunk)
            if held > limit:
                raise bad_input(
                    f"The export passes {limit} bytes, the most one response may carry "
                    "(THREADLINE_RESPONSE_MAX_BYTES): use `threadline export --user` for larger exports",
                    argument="userId",
                    limit=limit,
                    setting="THREADLINE_RESPONSE_MAX_BYTES",
                )
            chunks.append(chunk)

        await exporter.export_user(info.context.db, principal, decode_id(user_id, Kind.USER), collect)
        document: JSON = orjson.loads(b"".join(chunks))
        return document

    @strawberry.field(description="The tenant's retention policy (admins only).")
    async def retention_policy(self, info: Info) -> RetentionPolicy:
        principal = await info.context.principal()
        if not principal.is_admin:
            raise forbidden("Only tenant admins may read the retention policy")
        return RetentionPolicy(
            retention_days=await retention.retention_days(info.context.db, principal.tenant_id)
        )


@strawberry.type
class PortingMutation:
    @strawberry.mutation(
        description="Import conversations (Threadline, ChatGPT, Claude, LibreChat or Open WebUI export JSON; the "
        "format is detected when not given); each becomes a conversation "
        "owned by the caller. All or nothing: if any conversation is invalid or the database refuses to store it, "
        "none is imported (nor merged) and the error lists them (extensions.failures). Re-importing the same source ids returns the earlier conversations."
    )
    async def conversation_import(
        self,
        info: Info,
        input: Annotated[
            ConversationImportInput,
            strawberry.argument(
                description="The format, the decoded export file, and optionally a conversation to add to."
            ),
        ],
    ) -> list[Conversation]:
        # All or nothing: what planning or storing refuses is an error, and nothing of the input stays
        # (service.import_data).
        _, report = await _import(info, input, all_or_nothing=True)
        return await _readable(info, report.conversation_ids)

    @strawberry.mutation(
        description="Like conversationImport, but imports every valid conversation (each in its own transaction) "
        "and reports the refused ones instead of failing."
    )
    async def conversation_import_report(
        self,
        info: Info,
        input: Annotated[
            ConversationImportInput,
            strawberry.argument(
                description="The format, the decoded export file, and optionally a conversation to add to."
            ),
        ],
    ) -> ConversationImportReport:
        fmt, report = await _import(info, input, all_or_nothing=False)
        return ConversationImportReport(
            conversations=await _readable(info, report.conversation_ids),
            format=ImportFormatEnum(fmt.value),
            imported=len(report.imported),
            skipped=report.skipped,
            merged=len(report.merged),
            failed=len(report.failures),
            message_count=report.messages,
            messages_added=sum(m.messages_added for m in report.merged),
            messages_updated=sum(m.messages_updated for m in report.merged),
            merges=[
                ImportMerge(
                    conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, m.conversation_id)),
                    external_id=m.external_id,
                    messages_added=m.messages_added,
                    messages_updated=m.messages_updated,
                )
                for m in report.merged
            ],
            failures=[
                ImportFailure(index=f.index, external_id=f.external_id, message=f.message)
                for f in report.failures
            ],
            warnings=report.warnings,
        )


@strawberry.type
class RetentionMutation:
    @strawberry.mutation(
        description="Set the tenant's retention (admins only): conversations deleted or inactive for longer than "
        "`retentionDays` are hard-deleted by a background job; null turns it off. Audited."
    )
    async def tenant_retention_set(
        self,
        info: Info,
        retention_days: Annotated[
            int | None,
            strawberry.argument(
                description="Days (1 to 36,500) a conversation may stay deleted or inactive before it is "
                "hard-deleted; null: keep everything."
            ),
        ] = strawberry.UNSET,
    ) -> RetentionPolicy:
        retention_days = given(retention_days, "retentionDays", "keeps everything")
        principal = await info.context.principal()
        days = await retention.set_retention(info.context.db, principal, retention_days)
        return RetentionPolicy(retention_days=days)
