"""Deleted means gone, in the event log too: replays (`since`) show the current state of every message.

An edit, a delete, a deleted run output and a user's erasure leave none of the old text in the frames a
later replay sends (to a participant who joined afterwards or to the author), nor in `stream_event`,
`message_chunk` or `Message.chunks`; and the replay still has every event of the log exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation, join, reply, start_thread, stream_cursor
from tests.harness import Actor, Loop, ServerThread, test_settings, unique
from tests.test_runs_recovery import REPLY, WORDS, WorkerProcess
from tests.test_runs_support import create_run, on, runs_server, settle, wait_for, wait_for_chunks
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient, read_frames

EDIT = "mutation($m: ID!, $x: String!) { messageEdit(id: $m, content: $x) { id content } }"
DELETE = "mutation($m: ID!) { messageDelete(id: $m) { id isDeleted } }"
APPEND = "mutation($m: ID!, $d: String!) { messageAppend(id: $m, delta: $d) { id } }"
FINISH = "mutation($m: ID!) { messageFinish(id: $m) { id } }"
ERASE = "mutation($u: ID!) { userErase(userId: $u) { userId messagesRedacted } }"
MESSAGE = "query($m: ID!) { message(id: $m) { content isDeleted chunks { index content } } }"


def sql(loop: Loop, dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return loop.run(run())


def logged_cursors(loop: Loop, dsn: str, conversation: str, recipient: str) -> list[str]:
    """Cursors of the logged events a subscriber of `conversation` (user `recipient`) replays, in log order,
    encoded as the API shows them (opaque, per tenant) with the key every server process of `dsn` uses."""
    from threadline.streaming.cursors import load_codec
    from threadline.streaming.subscriber import SELECTED_ONLY

    rows = sql(
        loop,
        dsn,
        # Branch and enrichment events go only to subscriptions that select their types, which the replays here
        # do not.
        """SELECT id, tenant_id FROM stream_event WHERE conversation_id = $1::uuid
             AND (recipient_id IS NULL OR recipient_id = $2::uuid)
             AND type <> ALL($3::varchar[]) ORDER BY id""",
        conversation[4:],
        recipient[4:],
        list(SELECTED_ONLY),
    )

    async def codec() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await load_codec(conn, test_settings(dsn))
        finally:
            await conn.close()

    cursors = loop.run(codec())
    return [cursors.encode(r["tenant_id"], r["id"]) for r in rows]


def replay(client: WsClient, query: str, variables: dict[str, Any], through: str) -> list[str]:
    """Subscribe with `since` and return the raw text of every event frame up to the one of cursor `through`."""
    client.subscribe(query, variables)

    def done(message: dict[str, Any]) -> bool:
        assert not message["payload"].get("errors"), message
        return bool(next(iter(message["payload"]["data"].values()))["cursor"] == through)

    frames, completed = read_frames(client, done, timeout=20, stop_at_complete=True)
    assert not completed, frames
    return frames


def event_of(raw: str) -> dict[str, Any]:
    return next(iter(json.loads(raw)["payload"]["data"].values()))  # type: ignore[no-any-return]


def cursors(frames: list[str]) -> list[str]:
    return [event_of(f)["cursor"] for f in frames]


def wait_for_event(client: WsClient, accept: Callable[[dict[str, Any]], bool]) -> None:
    """Read the live subscription until an event `accept`s (so the hub has routed everything before it)."""
    while not accept(client.events(1, ignore=())[0]):
        pass


def rows_containing(loop: Loop, dsn: str, table: str, needle: str) -> int:
    rows = sql(loop, dsn, f'SELECT count(*) AS n FROM "{table}" t WHERE strpos(t::text, $1) > 0', needle)
    return int(rows[0]["n"])


def test_a_replay_after_edit_and_delete_shows_only_the_current_text(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient], loop: Loop, dsn: str
) -> None:
    author, late = make_user(admin), make_user(admin)
    cid = create_conversation(admin, "hostile-log")
    join(admin, author, cid)
    # A live subscriber: the server renders (and keeps) every event as it happens.
    watcher = ws(admin)
    watcher.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": stream_cursor(admin)})

    first, second, kept_before, kept_after = (unique(p) for p in ("FIRST", "SECOND", "BEFORE", "AFTER"))
    root = start_thread(author, cid, kept_before)
    doomed = reply(author, root, first)
    author.client.ok(EDIT, {"m": doomed, "x": second})
    author.client.ok(EDIT, {"m": root, "x": kept_after})
    author.client.ok(DELETE, {"m": doomed})
    wait_for_event(watcher, lambda e: e.get("action") == "DELETE")

    join(admin, late, cid)  # joins after all of it
    expected = logged_cursors(loop, dsn, cid, late.user_id)
    frames = replay(ws(late), CONVERSATION_EVENTS, {"c": cid, "s": "0"}, expected[-1])
    author_frames = replay(ws(author), VIEWER_EVENTS, {"s": "0"}, expected[-1])

    # Every event of the log, once, in order (nothing was removed to hide the text).
    assert cursors(frames) == expected
    for replayed in (frames, author_frames):
        text = "\n".join(replayed)
        assert first not in text and second not in text and kept_before not in text
        seen = [event_of(f) for f in replayed]
        new = next(e for e in seen if e["type"] == "thread.new")
        assert new["thread"]["root"]["content"] == kept_after
        changed = [e["changedMessage"] for e in seen if e["type"] == "thread.activity"]
        # REPLY, EDIT and DELETE of the deleted message all show the tombstone; the root's EDIT its new text.
        assert [(m["content"], m["isDeleted"]) for m in changed if m["id"] == doomed] == [("", True)] * 3
        assert [m["content"] for m in changed if m["id"] == root] == [kept_after]

    for needle in (first, second, kept_before):
        assert rows_containing(loop, dsn, "stream_event", needle) == 0
    # The deleted message's edit history is gone too; the kept one's stays (`Message.edits`, by design).
    assert rows_containing(loop, dsn, "message_edit", first) == 0
    assert rows_containing(loop, dsn, "message_edit", second) == 0


@pytest.fixture(scope="module")
def runs(dsn: str) -> Iterator[ServerThread]:
    server = runs_server(dsn, run_workers=1, echo_delay_seconds=0.0)
    server.start()
    yield server
    server.stop()


def test_a_deleted_run_output_leaves_no_streamed_text_in_replays_or_chunks(
    admin: Actor,
    make_user: Callable[..., Actor],
    runs: ServerThread,
    ws: Callable[..., WsClient],
    loop: Loop,
    dsn: str,
) -> None:
    owner, late = on(runs, admin), on(runs, make_user(admin))
    cid = create_conversation(owner, "hostile-run")
    watcher = ws(owner, runs)
    watcher.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": stream_cursor(owner)})
    word = unique("streamed")
    root = start_thread(owner, cid, word)
    run = wait_for(owner, create_run(owner, root)["id"])
    settle(loop, dsn, runs.app.state.services.settings.run_queue)
    output = run["output"]["id"]
    assert run["status"] == "COMPLETED" and run["output"]["content"] == f"echo: {word}"
    # The question is reworded (its old text stays only in its edit history) and the answer deleted: the
    # word survives nowhere in the log.
    owner.client.ok(EDIT, {"m": root, "x": "a question"})
    owner.client.ok(DELETE, {"m": output})
    wait_for_event(watcher, lambda e: e.get("action") == "DELETE")

    assert owner.client.ok(MESSAGE, {"m": output})["message"] == {
        "content": "",
        "isDeleted": True,
        "chunks": [],
    }
    join(owner, late, cid)
    expected = logged_cursors(loop, dsn, cid, late.user_id)
    frames = replay(ws(late, runs), CONVERSATION_EVENTS, {"c": cid, "s": "0"}, expected[-1])
    assert cursors(frames) == expected
    deltas = [event_of(f) for f in frames if event_of(f)["type"] == "message.delta"]
    assert deltas and all(d["messageId"] == output and d["delta"] == "" for d in deltas)
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert word not in "\n".join(frames)

    assert (
        sql(loop, dsn, "SELECT count(*) AS n FROM message_chunk WHERE message_id = $1::uuid", output[4:])[0][
            "n"
        ]
        == 0
    )
    assert rows_containing(loop, dsn, "stream_event", word) == 0
    assert rows_containing(loop, dsn, "message_chunk", word) == 0


def test_a_replay_after_userErase_has_none_of_the_erased_users_text(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient], loop: Loop, dsn: str
) -> None:
    erased, other, late = make_user(admin), make_user(admin), make_user(admin)
    cid = create_conversation(admin, "hostile-erase")
    join(admin, erased, cid)
    join(admin, other, cid)
    watcher = ws(admin)
    watcher.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": stream_cursor(admin)})

    words = {p: unique(p) for p in ("ROOT", "DRAFT", "FINAL", "STREAM")}
    root = start_thread(erased, cid, words["ROOT"])
    answer = reply(other, root, "other-reply-stays")
    mine = reply(erased, answer, words["DRAFT"])
    erased.client.ok(EDIT, {"m": mine, "x": words["FINAL"]})
    streamed = reply(erased, answer, "…", role="ASSISTANT")
    for piece in (words["STREAM"], " and more"):
        erased.client.ok(APPEND, {"m": streamed, "d": piece})
    erased.client.ok(FINISH, {"m": streamed})
    wait_for_event(watcher, lambda e: e["type"] == "message.done")
    assert admin.client.ok(ERASE, {"u": erased.user_id})["userErase"]["messagesRedacted"] == 3

    join(admin, late, cid)
    expected = logged_cursors(loop, dsn, cid, late.user_id)
    for client, query, variables in (
        (ws(late), CONVERSATION_EVENTS, {"c": cid, "s": "0"}),
        (ws(admin), CONVERSATION_EVENTS, {"c": cid, "s": "0"}),
        (ws(other), VIEWER_EVENTS, {"s": "0"}),
    ):
        frames = replay(client, query, variables, expected[-1])
        text = "\n".join(frames)
        assert not [w for w in words.values() if w in text], text
        assert "other-reply-stays" in text
    assert cursors(replay(ws(late), CONVERSATION_EVENTS, {"c": cid, "s": "0"}, expected[-1])) == expected

    for word in words.values():
        for table in ("stream_event", "message_chunk", "message", "message_edit"):
            assert rows_containing(loop, dsn, table, word) == 0, (table, word)


def test_retention_leaves_no_event_or_chunk_of_a_purged_conversation(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """(A guard: retention hard-deletes a conversation's events with it, and its chunks by cascade.)"""
    from threadline.db import Database
    from threadline.porting.retention import purge_expired

    admin.client.ok("mutation { tenantRetentionSet(retentionDays: 30) { retentionDays } }")
    cid = create_conversation(admin, "hostile-retention")
    words = {p: unique(p) for p in ("ROOT", "STREAM")}
    root = start_thread(admin, cid, words["ROOT"])
    streamed = reply(admin, root, "…", role="ASSISTANT")
    admin.client.ok(APPEND, {"m": streamed, "d": words["STREAM"]})
    admin.client.ok(FINISH, {"m": streamed})
    sql(
        loop,
        dsn,
        "UPDATE conversation SET last_activity_at = now() - interval '31 days' WHERE id = $1::uuid",
        cid[4:],
    )

    async def purge() -> int:
        db = await Database.connect(dsn, 1, 2)
        try:
            return await purge_expired(db)
        finally:
            await db.close()

    assert loop.run(purge()) == 1
    for word in words.values():
        for table in ("stream_event", "message_chunk", "message"):
            assert rows_containing(loop, dsn, table, word) == 0, (table, word)


@pytest.fixture(scope="module")
def workerless(dsn: str) -> Iterator[ServerThread]:
    # Runs execute only in `threadline worker` processes here, so one can be killed mid-run.
    server = runs_server(dsn, run_workers=0, run_recovery_seconds=0, run_stale_seconds=2.0)
    server.start()
    yield server
    server.stop()


def test_a_requeued_runs_lost_attempt_replays_without_its_text(
    admin: Actor, workerless: ServerThread, ws: Callable[..., WsClient], loop: Loop, dsn: str
) -> None:
    owner = on(workerless, admin)
    queue = str(workerless.app.state.services.settings.run_queue)
    workers = [WorkerProcess(dsn, queue)]
    try:
        cid = create_conversation(owner)
        run = create_run(owner, start_thread(owner, cid, WORDS))
        wait_for_chunks(owner, run["id"])
        workers[0].kill()  # mid-stream: its deltas are logged, its chunks are discarded by the requeue
        workers.append(WorkerProcess(dsn, queue, THREADLINE_RUN_ON_LOST_WORKER="requeue"))
        done = wait_for(owner, run["id"])
        assert done["status"] == "COMPLETED" and done["attempt"] == 2

        expected = logged_cursors(loop, dsn, cid, owner.user_id)
        frames = replay(ws(owner, workerless), CONVERSATION_EVENTS, {"c": cid, "s": "0"}, expected[-1])
        assert cursors(frames) == expected
        deltas = [event_of(f) for f in frames if event_of(f)["type"] == "message.delta"]
        # Both attempts' deltas are replayed (index 0 twice), but only the second's carry text: the message's.
        assert [d["index"] for d in deltas].count(0) == 2
        assert "".join(d["delta"] for d in deltas) == REPLY == done["output"]["content"]
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.kill()
        settle(loop, dsn, None)
