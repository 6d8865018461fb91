"""`Conversation.from_row` and `Participant.from_row` set a dataclass's attributes one by one instead of calling
its keyword constructor (issue 14: a page builds 50 conversations and their participants): the instances must be
the constructor's, attribute for attribute and in the same order, for every kind of stored value."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from strawberry.scalars import JSON

from threadline.conversations.types import (
    Conversation,
    ConversationStatus,
    Participant,
    ParticipantRole,
)
from threadline.ids import Kind, encode_id

NOW = datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=UTC)


def conversation_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "title": "Plans",
        "description": "a description",
        "tags": ["a", "b"],
        "status": ConversationStatus.ACTIVE.value,
        "ai_provider": "echo",
        "model": "m-1",
        "session_id": "s-1",
        "max_history_messages": 20,
        "message_count": 3,
        "token_count": 41,
        "created_at": NOW,
        "updated_at": NOW,
        "last_activity_at": NOW,
        "metadata": {"k": "v"},
        "forked_from_conversation_id": uuid.uuid4(),
        "forked_from_message_id": uuid.uuid4(),
        "cold": True,
    }
    row.update(changes)
    return row


def by_constructor(row: dict[str, Any]) -> Conversation:
    """What `Conversation.from_row` built with the dataclass constructor before (issue 14)."""
    return Conversation(
        id=encode_id(Kind.CONVERSATION, row["id"]),
        uuid=row["id"],
        owner_uuid=row["owner_id"],
        title=row["title"],
        description=row["description"],
        tags=list(row["tags"] or []),
        status=ConversationStatus(row["status"]),
        ai_provider=row["ai_provider"],
        model=row["model"],
        session_id=row["session_id"],
        max_history_messages=row["max_history_messages"],
        message_count=row["message_count"],
        token_count=row["token_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_activity_at=row["last_activity_at"],
        metadata=JSON(row.get("metadata") or {}),
        forked_from_uuids=(row.get("forked_from_conversation_id"), row.get("forked_from_message_id")),
        cold=bool(row.get("cold")),
    )


def attributes(instance: object) -> list[tuple[str, Any]]:
    return [(name, (type(value), value)) for name, value in vars(instance).items()]


ROWS = [
    conversation_row(),
    conversation_row(
        description=None,
        tags=None,
        status=ConversationStatus.ARCHIVED.value,
        ai_provider=None,
        model=None,
        session_id=None,
        max_history_messages=None,
        metadata=None,
        forked_from_conversation_id=None,
        forked_from_message_id=None,
        cold=None,
    ),
    conversation_row(tags=[], status=ConversationStatus.DELETED.value, metadata={}, cold=False),
]


@pytest.mark.parametrize("row", ROWS)
def test_a_conversation_from_its_row_is_the_constructors_instance(row: dict[str, Any]) -> None:
    built = Conversation.from_row(row)  # type: ignore[arg-type]
    assert type(built) is Conversation
    assert attributes(built) == attributes(by_constructor(row))
    assert built == by_constructor(row)


def test_rows_without_the_optional_columns_build_the_constructors_instance() -> None:
    row = conversation_row()
    for column in ("metadata", "forked_from_conversation_id", "forked_from_message_id", "cold"):
        del row[column]
    assert attributes(Conversation.from_row(row)) == attributes(by_constructor(row))  # type: ignore[arg-type]


def test_every_constructor_field_of_a_conversation_is_set_by_from_row() -> None:
    # A field added to the type with a default would be left unset by from_row (no constructor runs).
    fields = [field.name for field in dataclasses.fields(Conversation) if field.init]
    assert list(vars(Conversation.from_row(conversation_row())).keys()) == fields  # type: ignore[arg-type]


@pytest.mark.parametrize("role", [role.value for role in ParticipantRole])
def test_a_participant_from_its_row_is_the_constructors_instance(role: str) -> None:
    row = {
        "id": uuid.uuid4(),
        "role": role,
        "joined_at": NOW,
        "conversation_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
    }
    expected = Participant(
        id=encode_id(Kind.PARTICIPANT, row["id"]),
        role=ParticipantRole(role),
        joined_at=NOW,
        conversation_id=encode_id(Kind.CONVERSATION, row["conversation_id"]),
        user_uuid=row["user_id"],
    )
    built = Participant.from_row(row)  # type: ignore[arg-type]
    assert type(built) is Participant
    assert attributes(built) == attributes(expected)
    assert [field.name for field in dataclasses.fields(Participant) if field.init] == list(vars(built))
