"""An all-or-nothing import (`conversationImport`, one transaction, its events deferred to its end: 3feba73):
- under MASK_ON_READ the events its merges log are masked (the outer deferral is off there, each batch's events
  are logged then masked);
- a batch that fails once is rolled back to its savepoint and each conversation tried again alone: the events of
  the undone attempt are not published, those of the retry exactly once."""

from __future__ import annotations

import uuid

from tests.harness import Actor, Loop
from tests.test_import_atomic import _claude
from tests.test_porting_import import IMPORT
from tests.test_privacy_pii import EMAIL, MASKED, TEXT, set_policy, sql


def _activity(loop: Loop, dsn: str, prefix: str) -> list[str]:
    return [
        r["p"]
        for r in sql(
            loop,
            dsn,
            """SELECT e.payload::text AS p FROM stream_event e JOIN conversation c ON c.id = e.conversation_id
               WHERE c.title LIKE $1 AND e.type = 'thread.activity' ORDER BY e.id""",
            f"{prefix}-%",
        )
    ]


def test_a_mask_on_read_all_or_nothing_merge_logs_masked_events(admin: Actor, loop: Loop, dsn: str) -> None:
    prefix = f"masked-{uuid.uuid4()}"
    admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": [_claude(f"{prefix}-0", "q", "a")]}})
    set_policy(admin, "MASK_ON_READ")
    try:
        grown = [_claude(f"{prefix}-0", "q", "a", "noted", TEXT)]
        grown += [_claude(f"{prefix}-{i}", f"question {i}") for i in range(1, 4)]
        admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": grown}})
        payloads = _activity(loop, dsn, prefix)
        assert payloads, "the merge announced nothing"
        assert all(EMAIL not in p for p in payloads), payloads
        assert any(MASKED in p for p in payloads), payloads
    finally:
        set_policy(admin, "OFF")


def test_a_batch_retried_alone_after_its_savepoint_rolled_back_announces_once(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    prefix = f"retry-{uuid.uuid4()}"
    first = [_claude(f"{prefix}-{i}", f"q{i}", f"a{i}") for i in range(3)]
    admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": first}})
    grown = [_claude(f"{prefix}-{i}", f"q{i}", f"a{i}", f"more {i}", f"fails-once {i}") for i in range(3)]
    flag = f"test_fail_once_{uuid.uuid4().hex[:8]}"
    # The batch's first attempt fails once its merges announced their messages (recording what they merged from);
    # the trigger then lets everything through, so each conversation alone is merged.
    sql(loop, dsn, f"CREATE SEQUENCE {flag}")
    sql(
        loop,
        dsn,
        f"""CREATE FUNCTION {flag}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('{flag}') = 1 THEN RAISE EXCEPTION 'the batch fails once'; END IF;
                RETURN NEW;
            END $$""",
    )
    sql(
        loop,
        dsn,
        f"""CREATE TRIGGER {flag} AFTER UPDATE ON import_source FOR EACH ROW
            WHEN (NEW.external_id = '{prefix}-2') EXECUTE FUNCTION {flag}()""",
    )
    try:
        body = admin.client.raw(IMPORT, {"i": {"format": "CLAUDE", "data": grown}})
        (attempts,) = sql(loop, dsn, f"SELECT last_value FROM {flag}")
    finally:
        sql(loop, dsn, f"DROP TRIGGER IF EXISTS {flag} ON import_source")
        sql(loop, dsn, f"DROP FUNCTION IF EXISTS {flag}()")
        sql(loop, dsn, f"DROP SEQUENCE IF EXISTS {flag}")
    assert "errors" not in body, body
    assert attempts["last_value"] == 2  # failed in the batch, then stored alone
    messages = sql(
        loop,
        dsn,
        """SELECT m.content FROM message m JOIN conversation c ON c.id = m.conversation_id
           WHERE c.title LIKE $1 AND m.content LIKE 'fails-once%'""",
        f"{prefix}-%",
    )
    assert sorted(r["content"] for r in messages) == [f"fails-once {i}" for i in range(3)]
    payloads = _activity(loop, dsn, prefix)
    for i in range(3):
        # Each merge announced once: not again for the attempt rolled back to its savepoint.
        assert sum(f'"content": "fails-once {i}"' in p for p in payloads) == 1, payloads
