"""threadTree's fast constructions give what the general ones give: the tree builder's Messages are the ones
`Message.from_row` builds from the same rows (every attribute, in order), and dates in UTC are written as
`isoformat()` writes them. (The executor side, lists of leaf-only objects completed in one loop, is compared
with the stock executor in tests/test_fast_execution.py and tests/test_compiled_execution.py.)
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation
from tests.harness import Actor, Loop
from tests.test_threads import random_parents, seed_tree, uuid_of
from threadline.graphql.compiled_leaves import utc_isoformat
from threadline.threads import repository as repo
from threadline.threads import types
from threadline.threads.types import Message, tree_messages_in_slices

# Every stored value a tree row can carry, varied by depth: roles, models, usage (counted and imported), edits,
# a tombstone.
VARIED = """UPDATE message SET
    role = (ARRAY['USER', 'ASSISTANT', 'SYSTEM', 'TOOL'])[1 + depth % 4],
    model = CASE WHEN depth % 2 = 1 THEN 'model-' || depth END,
    prompt_tokens = CASE WHEN depth % 3 = 1 THEN depth END,
    completion_tokens = CASE WHEN depth % 3 = 2 THEN 7 END,
    usage_imported = depth % 5 = 0,
    edited_at = CASE WHEN depth % 4 = 3 THEN now() END,
    deleted_at = CASE WHEN depth = 2 THEN now() END,
    content = CASE WHEN depth = 2 THEN '' ELSE content END
    WHERE root_id = $1"""


def attributes(message: Any) -> list[tuple[str, Any]]:
    return list(vars(message).items())


@pytest.mark.parametrize("slice_rows", [2_000, 7])
def test_tree_messages_are_what_from_row_builds_for_the_whole_thread_and_a_subtree(
    admin: Actor, loop: Loop, dsn: str, monkeypatch: pytest.MonkeyPatch, slice_rows: int
) -> None:
    monkeypatch.setattr(types, "TREE_SLICE_ROWS", slice_rows)  # 7: many slices, hand-overs in between
    model = seed_tree(loop, dsn, admin, create_conversation(admin), random_parents(80, seed=5))
    tenant, root = uuid_of(admin.tenant_id), uuid_of(model.ids[0])

    async def read() -> tuple[list[asyncpg.Record], list[asyncpg.Record], bytes]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(VARIED, root)
            whole = await repo.subtree(conn, tenant, root, b"", None)
            top = await conn.fetchrow(
                "SELECT path FROM message WHERE root_id = $1 AND depth = 2 AND child_count > 0 LIMIT 1", root
            )
            assert top is not None
            part = await repo.subtree(conn, tenant, root, bytes(top["path"]), None)
            return whole, part, bytes(top["path"])
        finally:
            await conn.close()

    whole, part, _ = loop.run(read())
    paths: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row in whole:  # depth-first: a parent comes before its replies
        parent = row["parent_id"]
        paths[row["id"]] = [row["id"]] if parent is None else [*paths[parent], row["id"]]
    assert {r["role"] for r in whole} == {"USER", "ASSISTANT", "SYSTEM", "TOOL"}
    assert any(r["deleted_at"] for r in whole) and any(r["prompt_tokens"] for r in whole)
    assert len(part) > 1 and part[0]["depth"] == 2

    for rows in (whole, part):
        built = loop.run(tree_messages_in_slices(rows, paths[rows[0]["id"]]))
        expected = [Message.from_row(row, paths[row["id"]]) for row in rows]
        assert [type(m) for m in built] == [Message] * len(rows)
        assert [attributes(m) for m in built] == [attributes(m) for m in expected]


def test_dates_in_utc_are_written_as_isoformat_writes_them() -> None:
    rng = random.Random(14)
    values = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 5, 13, 0, fold=1, tzinfo=UTC),
    ]
    start = datetime(1, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        moment = start + timedelta(
            seconds=rng.randrange(315_537_897_599), microseconds=rng.randrange(1_000_000)
        )
        values.append(moment.replace(microsecond=0) if rng.random() < 0.3 else moment)
    for value in values:
        assert utc_isoformat(value) == value.isoformat(), value
    # Anything else is isoformat's own: other offsets, naive values, dates, times.
    for value in (
        datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=7))),
        datetime(2026, 1, 1, 12, 0, 0, 5),
        datetime(2026, 1, 1, tzinfo=UTC).date(),
        datetime(2026, 1, 1, 1, 2, 3, 4, tzinfo=UTC).timetz(),
    ):
        assert utc_isoformat(value) == value.isoformat()
