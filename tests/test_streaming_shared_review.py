"""Attacks on the results a query's subscribers share (streaming.fanout) and on the hub's head start for them
(`StreamHub._await_shared`): through real sockets against the test server."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
import warnings
from collections.abc import Callable
from inspect import isawaitable
from typing import Any

import pytest

from tests.harness import Actor
from tests.test_streaming import START, conversation, join
from tests.test_streaming_direct import sockets  # noqa: F401  (a fixture)
from tests.ws import EVENT_FIELDS, WsClient, position

REPLY = "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }"
KEY_CREATE = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { secret apiKey { id } } }'
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
AUTHOR = """subscription($c: ID!) { conversationEvents(conversationId: $c) {
  cursor type ... on ThreadActivityEvent { action changedMessage { id author { id displayName } } } } }"""
OWN = """subscription($c: ID!) { conversationEvents(conversationId: $c) {
  type ... on ThreadActivityEvent { action changedMessage { id feedback { rating } } } } }"""
IGNORED = ("presence.update", "membership.changed", "unread.update", "typing.update")


def test_a_selection_of_the_viewers_own_is_not_executed_and_dropped_by_the_lanes(
    admin: Actor,
    make_user: Callable[..., Actor],
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A query selecting a field of the viewer's own (`feedback`) is executed by each subscriber's stock path. The
    lanes must not also start executing it for every event (per group of sockets) and drop it unfinished: the
    work was wasted, and Python warned about its coroutines never awaited on every event. At most once per query
    and event type now (the lanes then know the stock path takes that type)."""
    from threadline.streaming.direct import Lane

    dropped: list[str] = []
    execute = Lane._execute

    def counting(self: Lane, shared: Any) -> Any:
        result = execute(self, shared)
        if isawaitable(result) and not isinstance(result, asyncio.Future):
            dropped.append(shared.type)  # what the lane cannot use: the stock path executes it again
        return result

    monkeypatch.setattr(Lane, "_execute", counting)
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    clients = [sockets(actor, True) for actor in (admin, member, admin)]
    for client in clients:
        client.subscribe(OWN, {"c": cid})
    time.sleep(0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(3):
            admin.client.ok(REPLY, {"p": root, "x": f"answer {n}"})
        for client in clients:
            events = client.events(3, ignore=IGNORED, timeout=15)
            assert [e["changedMessage"]["feedback"] for e in events] == [None] * 3
        gc.collect()
    # Three events, two groups of sockets (the admin's, the member's): six executions dropped before.
    assert dropped in ([], ["thread.activity"]), dropped  # (none if the process met this query before)
    unawaited = [w for w in caught if "await_result' was never awaited" in str(w.message)]
    assert not unawaited, len(unawaited)


def test_events_routed_early_are_not_executed_ahead_again_on_every_pass(
    admin: Actor,
    server: Any,
    loop: Any,
    dsn: str,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While an open writer holds the cursor back, the hub reads the same events again on every pass (every
    GAP_POLL_SECONDS) and routes those of other conversations early, once. Its head start must not execute
    them again for every lane group on each of those passes (the routing pass skips them: the groups took them
    already; for 2,000 held events and a few groups each, that was most of the hub's time while a writer was
    slow)."""
    from tests.test_reliability_cursors import conversation_in_another_bucket, open_writer
    from threadline.streaming.direct import LaneGroup

    ahead: list[int] = []
    start_shared = LaneGroup.start_shared

    def counting(self: LaneGroup, event: Any) -> list[Any]:
        ahead.append(event.id)
        return start_shared(self, event)

    monkeypatch.setattr(LaneGroup, "start_shared", counting)
    slow = conversation(admin)
    other = conversation_in_another_bucket(admin, slow)
    root = admin.client.ok(START, {"c": other, "x": "question"})["threadStart"]["id"]
    client = sockets(admin, True)
    client.subscribe(AUTHOR, {"c": other})
    time.sleep(0.5)
    with open_writer(loop, dsn, admin, slow) as writer:
        admin.client.ok(REPLY, {"p": root, "x": "answer"})
        (event,) = client.events(1, ignore=IGNORED, timeout=15)
        assert writer.open and event["changedMessage"]["author"]["id"] == admin.user_id
        time.sleep(0.5)  # the hub reads the held batch again meanwhile (every GAP_POLL_SECONDS)
        early = position(server, admin.tenant_id, event["cursor"])
        assert ahead.count(early) == 1, ahead.count(early)
        writer.commit()


def test_waiting_for_shared_results_leaves_the_passs_write_slices_their_turns(
    admin: Actor,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass's socket writes go in slices with a turn of the loop between them while the database is in use
    (`_write_out`: a writer's transaction waiting on its answer holds its thread's row locks), within
    YIELD_BUDGET_SECONDS. The head start's wait for shared results (the loop runs other work meanwhile) is not
    the hub's busy time, but it is no turn given between write slices either: it used up the budget, and after
    any wait of 10 ms (a busy database: when the turns matter most) the pass wrote to every socket at once."""
    from threadline.auth import repository as users
    from threadline.streaming import hub as hub_module

    turns: list[bool] = []
    users_by_ids = users.users_by_ids

    async def slow_users(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)  # a busy database
        return await users_by_ids(*args, **kwargs)

    def in_use(self: Any) -> bool:
        turns.append(True)
        return True

    monkeypatch.setattr(hub_module, "WRITE_SLICE", 1)
    monkeypatch.setattr(hub_module.StreamHub, "_database_in_use", in_use)
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    clients = [sockets(admin, True) for _ in range(3)]
    for client in clients:
        client.subscribe(AUTHOR, {"c": cid})
    time.sleep(0.5)
    monkeypatch.setattr(users, "users_by_ids", slow_users)
    turns.clear()
    admin.client.ok(REPLY, {"p": root, "x": "answer"})
    for client in clients:
        (event,) = client.events(1, ignore=IGNORED, timeout=15)
        assert event["changedMessage"]["author"]["id"] == admin.user_id
    assert turns  # three members in slices of one: two turns offered


ALL_AUTHOR = (
    "subscription($c: ID!) { conversationEvents(conversationId: $c) {"
    + EVENT_FIELDS
    + "... on ThreadActivityEvent { changedMessage { author { id displayName email } } } } }"
)


def test_slow_and_failing_loads_reach_every_socket_as_the_stock_path_sends_them(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: Any,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Authors loaded in time (direct frames), too slowly for the hub's wait (SHARED_WAIT_SECONDS: the stock path
    takes them), and not at all (the users' query fails: an error in the result): each socket receives every
    event once, in cursor order, and a direct socket the very bytes a stock socket receives."""
    from tests.test_streaming_direct import by_cursor, frames_until
    from threadline.auth import repository as users
    from threadline.ids import Kind, decode_id

    member, slowpoke, broken = make_user(admin), make_user(admin), make_user(admin)
    cid = conversation(admin)
    for actor in (member, slowpoke, broken):
        join(admin, actor, cid)
    slow_id, broken_id = (decode_id(a.user_id, Kind.USER) for a in (slowpoke, broken))
    users_by_ids = users.users_by_ids

    async def loads(db: Any, tenant_id: Any, ids: list[Any]) -> Any:
        if broken_id in ids:
            raise RuntimeError("users unavailable")
        if slow_id in ids:
            await asyncio.sleep(0.8)  # longer than the hub waits
        return await users_by_ids(db, tenant_id, ids)

    monkeypatch.setattr(users, "users_by_ids", loads)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    pairs = []
    for actor in (admin, member):
        pair = [sockets(actor, True), sockets(actor, True), sockets(actor, False)]
        for client in pair:
            client.subscribe(ALL_AUTHOR, {"c": cid})
        pairs.append(pair)
    time.sleep(0.5)
    marker = admin.client.ok(START, {"c": cid, "x": "marker"})["threadStart"]["id"]
    admin.client.ok(REPLY, {"p": root, "x": "fast"})
    slowpoke.client.ok(REPLY, {"p": root, "x": "slow"})
    member.client.ok("mutation($c: ID!) { typingSet(conversationId: $c, isTyping: true) }", {"c": cid})
    broken.client.ok(REPLY, {"p": root, "x": "failing"})
    member.client.ok(REPLY, {"p": root, "x": "fast too"})
    slowpoke.client.ok(START, {"c": cid, "x": "slow thread"})
    admin.client.ok(REPLY, {"p": root, "x": "fast again"})
    last = admin.client.ok(START, {"c": cid, "x": "the end"})["threadStart"]["id"]

    def is_last(message: dict[str, Any]) -> bool:
        return f'"{last}"' in json.dumps(message["payload"])

    def decode(cursor: str) -> int:
        return position(server, admin.tenant_id, cursor)

    def event(raw: str) -> dict[str, Any]:
        return dict(json.loads(raw)["payload"]["data"]["conversationEvents"])

    for pair in pairs:
        received = []
        for client in pair:
            frames = frames_until(client, is_last)
            start = min(decode(event(f)["cursor"]) for f in frames if marker in f)
            # Rising cursors (by_cursor asserts it); an error names its socket's own request.
            received.append(
                {
                    k: re.sub(r'"requestId":"\w+"', '"requestId":"-"', v)
                    for k, v in by_cursor(frames, start - 1, decode).items()
                }
            )
        assert received[0] == received[2] and received[1] == received[2]
        contents = [
            event(raw).get("changedMessage", {}).get("content")
            or event(raw).get("thread", {}).get("root", {}).get("content")
            for raw in received[2].values()
        ]
        assert [c for c in contents if c] == [
            "marker",
            "fast",
            "slow",
            "failing",
            "fast too",
            "slow thread",
            "fast again",
            "the end",
        ]
        failing = [json.loads(raw)["payload"] for raw in received[2].values() if '"failing"' in raw]
        assert failing[0].get("errors"), failing


def test_events_a_group_does_not_take_are_not_executed_ahead_for_it(
    admin: Actor,
    make_user: Callable[..., Actor],
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The head start executes what the pass will route to each group: not the types sent only to selections
    that name them (`branch.sibling`, `branch.current` here) for a group whose query does not, nor an addressed
    event for a group without its recipient (the pass skips both without executing anything)."""
    from threadline.streaming.direct import LaneGroup

    ahead: list[str] = []
    start_shared = LaneGroup.start_shared

    def counting(self: LaneGroup, event: Any) -> list[Any]:
        ahead.append(event.type)
        return start_shared(self, event)

    monkeypatch.setattr(LaneGroup, "start_shared", counting)
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    admin.client.ok(REPLY, {"p": root, "x": "first answer"})
    clients = [sockets(admin, True) for _ in range(2)]
    for client in clients:
        client.subscribe(AUTHOR, {"c": cid})
    # The member's query names BranchCurrentEvent: the admin's own branch.current is not the member's.
    others = [sockets(member, True) for _ in range(2)]
    for client in others:
        client.subscribe(
            AUTHOR.replace("} } } } }", "} } } ... on BranchCurrentEvent { leafId } } }"), {"c": cid}
        )
    time.sleep(0.5)
    ahead.clear()
    admin.client.ok(REPLY, {"p": root, "x": "second answer"})  # thread.activity, then branch.sibling
    admin.client.ok(REPLY, {"p": root, "x": "third answer"})
    for client in clients + others:
        events = client.events(2, ignore=(*IGNORED, "branch.sibling"), timeout=15)
        assert [e["changedMessage"]["author"]["id"] for e in events] == [admin.user_id] * 2
    assert "branch.sibling" not in ahead and "branch.current" not in ahead, ahead
    assert ahead.count("thread.activity") == 4, ahead  # two events, two groups


def test_a_revoked_subscriber_never_answers_for_the_others(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: Any,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
) -> None:
    """A socket whose key was revoked, with its transport paused (a client not reading): the re-check refused it and
    its close waits for the buffer to drain, so its subscription stays in its lane group meanwhile, and its context
    no longer authenticates. The results the other subscribers of its query share must not be executed with that
    context: they got its UNAUTHENTICATED (the author null) for an event they may read."""
    from tests.test_streaming_keepalive import open_protocols

    revoked, member = make_user(admin), make_user(admin)
    cid = conversation(admin)
    join(admin, revoked, cid)
    join(admin, member, cid)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    created = revoked.client.ok(KEY_CREATE, {"u": revoked.user_id})["apiKeyCreate"]
    before = set(open_protocols(server))
    stalled = sockets(Actor(revoked.tenant_id, revoked.user_id, created["secret"], revoked.client), True)
    (protocol,) = set(open_protocols(server)) - before
    # Its own operation id, so its own lane group (the conversation's first), with the query's shared results.
    stalled.subscribe(AUTHOR, {"c": cid}, op_id="r")
    time.sleep(0.5)
    client = sockets(member, True)
    client.subscribe(AUTHOR, {"c": cid}, op_id="m")
    time.sleep(0.5)
    protocol.loop.call_soon_threadsafe(protocol.pause_writing)  # as when the client's buffers are full
    revoked.client.ok(KEY_REVOKE, {"k": created["apiKey"]["id"]})
    time.sleep(1.0)  # the socket is re-checked: refused, its close waiting on the paused transport
    admin.client.ok(REPLY, {"p": root, "x": "answer"})
    (event,) = client.events(1, "m", ignore=IGNORED, timeout=15)  # (fails on errors)
    assert event["changedMessage"]["author"]["id"] == admin.user_id


def test_a_revoked_stock_subscriber_never_answers_for_the_others(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: Any,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
) -> None:
    """As above, on the stock path (direct frames off): whichever subscriber's stream executes an event first
    made the result its query's subscribers share; the refused one's must stay its own. Four conversations: each
    event's first execution is the refused socket's about half the time (it then blocks on its paused socket)."""
    from tests.test_streaming_keepalive import open_protocols

    revoked, member = make_user(admin), make_user(admin)
    created = revoked.client.ok(KEY_CREATE, {"u": revoked.user_id})["apiKeyCreate"]
    before = set(open_protocols(server))
    stalled = sockets(Actor(revoked.tenant_id, revoked.user_id, created["secret"], revoked.client), False)
    (protocol,) = set(open_protocols(server)) - before
    client = sockets(member, False)
    roots = []
    for n in range(4):
        cid = conversation(admin)
        join(admin, revoked, cid)
        join(admin, member, cid)
        roots.append(admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"])
        stalled.subscribe(AUTHOR, {"c": cid}, op_id=f"r{n}")
        client.subscribe(AUTHOR, {"c": cid}, op_id=f"m{n}")
    time.sleep(0.5)
    protocol.loop.call_soon_threadsafe(protocol.pause_writing)
    revoked.client.ok(KEY_REVOKE, {"k": created["apiKey"]["id"]})
    time.sleep(1.0)
    for root in roots:
        admin.client.ok(REPLY, {"p": root, "x": "answer"})
    for n in range(4):
        (event,) = client.events(1, f"m{n}", ignore=IGNORED, timeout=15)  # (fails on errors)
        assert event["changedMessage"]["author"]["id"] == admin.user_id
