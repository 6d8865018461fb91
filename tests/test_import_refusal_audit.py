"""An all-or-nothing import (`conversationImport`) refused whole is audited: before, its audit entry went with the
import's rollback (refused while storing) or was never written (refused while reading), so an admin saw no trace
of the attempt. The entry says it was refused, with counts only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.harness import Actor, Loop
from tests.test_audit import entries
from tests.test_import_atomic import _claude
from tests.test_import_bulk import poisoned_messages
from tests.test_porting_import import IMPORT


@pytest.fixture
def poison(loop: Loop, dsn: str) -> Iterator[None]:
    with poisoned_messages(loop, dsn):
        yield


def imports(admin: Actor) -> list[dict[str, object]]:
    return [r[4] for r in entries(admin, a="conversation.import")]


def test_an_import_the_database_refuses_while_storing_is_audited_as_refused(
    admin: Actor, poison: None
) -> None:
    prefix = f"refused-{uuid.uuid4()}"
    data = [
        _claude(f"{prefix}-0", "fine"),
        _claude(f"{prefix}-1", "poison pill"),
        _claude(f"{prefix}-2", "ok"),
    ]
    error = admin.client.error(IMPORT, {"i": {"format": "CLAUDE", "data": data}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    (entry,) = imports(admin)
    assert entry == {
        "format": "claude",
        "refused": True,
        "conversations": 3,
        "imported": 0,
        "merged": 0,
        "failed": 1,
        "messages": 0,
    }


def test_an_import_refused_while_reading_is_audited_as_refused(admin: Actor) -> None:
    prefix = f"unreadable-{uuid.uuid4()}"
    data = [_claude(f"{prefix}-0", "fine"), {"uuid": f"{prefix}-1", "chat_messages": "not a list"}]
    error = admin.client.error(IMPORT, {"i": {"format": "CLAUDE", "data": data}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    (entry,) = imports(admin)
    assert entry["refused"] is True and entry["failed"] == 1 and entry["imported"] == 0


def test_an_import_that_succeeds_is_audited_once_and_not_as_refused(admin: Actor) -> None:
    prefix = f"fine-{uuid.uuid4()}"
    admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": [_claude(f"{prefix}-0", "hello")]}})
    (entry,) = imports(admin)
    assert "refused" not in entry and entry["imported"] == 1
