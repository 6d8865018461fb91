"""The last batch split across the write slots (02110b4), through the CLI: a conversation repeated in it keeps its
first copy (the copies fall in different parts), and a re-import whose last batch merges into every conversation
merges each once, the parts running side by side."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Actor, Loop
from tests.test_import_merge import cli_import, summary
from tests.test_import_merge_ahead import grown
from tests.test_import_tail_split import conversations
from tests.test_porting_import import sql


def test_a_conversation_repeated_across_the_parts_of_the_last_batch_keeps_its_first_copy(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    items = [{**c, "id": f"rep-{n}", "conversation_id": f"rep-{n}"} for n, c in enumerate(conversations(9))]
    again = json.loads(json.dumps(items[0]))
    again["title"] = "the second copy"
    items.append(again)  # the last of three parts; the first copy is in the first
    path = tmp_path / "repeated.json"
    path.write_text(json.dumps(items))
    report = cli_import(dsn, admin, path)
    assert summary(report)[:4] == (9, 0, 1, 0)
    assert any("rep-0" in w and "only its first copy" in w for w in report["warnings"]), report["warnings"]
    rows = sql(
        loop,
        dsn,
        "SELECT c.title FROM conversation c JOIN import_source s ON s.conversation_id = c.id"
        " WHERE s.external_id = 'rep-0'",
    )
    assert [r["title"] for r in rows] == [items[0]["title"]]


def test_a_last_batch_of_merges_split_across_the_parts_merges_each_once(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    items = [{**c, "id": f"mrg-{n}", "conversation_id": f"mrg-{n}"} for n, c in enumerate(conversations(12))]
    path = tmp_path / "first.json"
    path.write_text(json.dumps(items))
    assert summary(cli_import(dsn, admin, path))[:4] == (12, 0, 0, 0)
    newer = [
        grown(c, "a-2", [("u-3", "user", f"more {n}"), ("a-3", "assistant", "ok")])
        for n, c in enumerate(items)
    ]
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(newer))
    report = cli_import(dsn, admin, path)
    assert summary(report)[:4] == (0, 12, 0, 0), report
    rows = sql(
        loop,
        dsn,
        """SELECT s.external_id, count(m.id) FILTER (WHERE m.content LIKE 'more %') AS added
           FROM import_source s JOIN message m ON m.conversation_id = s.conversation_id
           WHERE s.external_id LIKE 'mrg-%' GROUP BY s.external_id""",
    )
    assert len(rows) == 12 and all(r["added"] == 1 for r in rows), rows
