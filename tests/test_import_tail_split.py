"""The last batch of an import is written when nothing is left to read: it is split across the write slots
(THREADLINE_IMPORT_CONCURRENCY), so its statements run on as many server backends as the batches before, instead
of one long transaction alone (the new conversations closing a grown export were half of its re-import's time,
bench/RESULTS.md). Told by the transactions that wrote the conversations (their rows' xmin)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Actor, Loop
from tests.test_import_merge import cli_import, summary
from tests.test_import_merge_ahead import first_export
from tests.test_porting_import import sql


def conversations(count: int) -> list[dict[str, object]]:
    template = first_export()
    out = []
    for n in range(count):
        conversation = json.loads(json.dumps(template))
        conversation["conversation_id"] = conversation["id"] = f"tail-{n:03}"
        conversation["title"] = f"tail {n}"
        out.append(conversation)
    return out


def test_the_last_batch_is_written_in_as_many_transactions_as_there_are_write_slots(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(conversations(45)))  # fewer than a batch: all of them are the last one
    assert summary(cli_import(dsn, admin, path))[:2] == (45, 0)
    (row,) = sql(
        loop,
        dsn,
        "SELECT count(DISTINCT s.xmin::text) AS n FROM import_source s WHERE s.external_id LIKE 'tail-%'",
    )
    assert row["n"] == 3  # THREADLINE_IMPORT_CONCURRENCY's default
