"""Lane groups with several users (streaming.direct `LaneGroup`): the idle subscriptions of one conversation with
the same query share a group whatever their user, and the group takes addressed events (`unread.update`,
`branch.current`) for their recipient's sockets only, `thread.new` in its author's and its readers' renderings,
and SELECTED_ONLY types only where the query selects them. Each user's direct sockets must receive exactly what a
stock-path socket of the same user receives (byte for byte, once each, in order), and nothing addressed to
someone else."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from typing import Any

import pytest

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, ServerThread
from tests.test_streaming_direct import by_cursor, frames_until, sockets  # noqa: F401 - `sockets` is a fixture
from tests.test_streaming_parked import subscriptions, wait_for
from tests.ws import EVENT_FIELDS, WsClient, position, read_frames
from threadline.ids import Kind, decode_id
from threadline.streaming import hub as hub_module
from threadline.streaming.direct import LaneGroup

# EVENT_FIELDS plus a SELECTED_ONLY type (branch.current: addressed to the user who moved); branch.sibling is
# not selected, so no socket may get it. Without the root's author: it is loaded per event (awaitable), which a
# lane declines, so every thread.new would take the stock path, each member leaving the group until its stream
# drained and idled again, and the group's own thread.new renderings would go untested.
QUERY = (
    "subscription($c: ID!) { conversationEvents(conversationId: $c) {"
    + EVENT_FIELDS.replace(" author { id }", "")
    + " ... on BranchCurrentEvent { leafId reason } } }"
)
IGNORED = ("presence.update", "typing.update")  # sockets opening at different moments see different presence


def groups_of(server: ServerThread, cid: str) -> list[Any]:
    hub = server.app.state.services.hub
    return list(hub._groups.get(decode_id(cid, Kind.CONVERSATION), {}).values())


def events_of(frames: list[str]) -> list[dict[str, Any]]:
    return [next(iter(json.loads(f)["payload"]["data"].values())) for f in frames]


def test_a_shared_group_sends_addressed_events_to_their_recipients_only(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: ServerThread,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
) -> None:
    a, b = make_user(admin), make_user(admin)
    cid = create_conversation(admin, "groups")
    join(admin, a, cid)
    join(admin, b, cid)
    root = start_thread(admin, cid, "root")

    # Five direct sockets of three users with the same query, variables and operation id: one group. And one
    # stock-path socket per user: what that user must see.
    users = {"admin": admin, "a": a, "b": b}
    direct = {name: [sockets(actor, True)] for name, actor in users.items()}
    direct["a"].append(sockets(a, True))
    direct["b"].append(sockets(b, True))
    stock = {name: sockets(actor, False) for name, actor in users.items()}
    for client in [*stock.values(), *(c for cs in direct.values() for c in cs)]:
        client.subscribe(QUERY, {"c": cid}, op_id="1")

    def one_group_of_five() -> bool:
        found = [g for g in groups_of(server, cid) if len(g.members) == 5]
        return len(found) == 1 and sorted(found[0].users.values()) == [1, 2, 2]

    # Every direct subscription is idle (its lane open) in one group of three users; a warm-up thread first, so
    # the sockets' opening presence is behind the marker below. Only once all eight are registered: a
    # subscription without `since` gets the events routed after it registered, so a late one would never see it.
    wait_for(lambda: len(subscriptions(server, cid)) == 8, "the eight subscriptions never registered")
    warm_up = start_thread(admin, cid, "warm-up")
    for client in [*stock.values(), *(c for cs in direct.values() for c in cs)]:
        frames_until(client, lambda m: warm_up in json.dumps(m["payload"]))
    wait_for(one_group_of_five, "the direct subscriptions never formed one group of three users")

    marker = start_thread(admin, cid, "marker")
    reply(admin, root, "from admin")  # thread.activity; unread.update to a and b; branch.current to admin
    a_thread = start_thread(a, cid, "a's thread")  # thread.new (a: author); unread.update to admin and b
    reply(
        b, root, "from b"
    )  # branch.sibling (not selected); unread.update to admin and a; branch.current to b
    last = start_thread(admin, cid, "the end")

    def is_last(message: dict[str, Any]) -> bool:
        event = next(iter(message["payload"]["data"].values()))
        return event["type"] == "thread.new" and event["thread"]["root"]["id"] == last

    def decode(cursor: str) -> int:
        return position(server, admin.tenant_id, cursor)

    def after_marker(frames: list[str]) -> dict[tuple[str, str], str]:
        start = min(decode(e["cursor"]) for e in events_of(frames) if marker in json.dumps(e))
        return {
            key: raw
            for key, raw in by_cursor(frames, start - 1, decode).items()
            if events_of([raw])[0]["type"] not in IGNORED
        }

    seen: dict[str, dict[tuple[str, str], str]] = {}
    for name in users:
        expected = after_marker(frames_until(stock[name], is_last))
        for client in direct[name]:
            got = after_marker(frames_until(client, is_last))
            assert got.keys() == expected.keys(), name  # by_cursor: each once, in order
            for key, raw in got.items():
                assert raw == expected[key], (name, key)
        seen[name] = expected

    def cursors(name: str, kind: str) -> set[str]:
        return {c for (_, c), raw in seen[name].items() if events_of([raw])[0]["type"] == kind}

    # Addressed events went to their recipient alone: an unread.update for each of the others' writes (a and b:
    # the marker too), none shared; branch.current only to the two users who replied; branch.sibling to nobody
    # (not selected).
    unread = {name: cursors(name, "unread.update") for name in users}
    assert {name: len(c) for name, c in unread.items()} == {"admin": 2, "a": 3, "b": 3}
    assert not (unread["admin"] & unread["a"] or unread["admin"] & unread["b"] or unread["a"] & unread["b"])
    moved = {name: cursors(name, "branch.current") for name in users}
    assert len(moved["admin"]) == 1 and len(moved["b"]) == 1 and not moved["a"]
    assert moved["admin"] != moved["b"]
    assert not any(cursors(name, "branch.sibling") for name in users)
    # thread.new in the author's rendering for a, the readers' for the others.
    for name, unread_count in (("a", 0), ("admin", 1), ("b", 1)):
        (event,) = [
            e
            for e in events_of(list(seen[name].values()))
            if e["type"] == "thread.new" and e["thread"]["root"]["id"] == a_thread
        ]
        assert event["thread"]["unreadCount"] == unread_count, name
    # Both thread.activity events reached everyone, the same for all.
    activity = [cursors(name, "thread.activity") for name in users]
    assert len(activity[0]) == 2 and activity[0] == activity[1] == activity[2]
    # The group was still whole at the end: it took every event itself (addressed ones, both thread.new
    # renderings), so no member ever left it for its own lane or the stock path.
    assert one_group_of_five()


@pytest.mark.parametrize("leaving", ["woken", "ended"])
def test_a_member_leaving_between_write_slices(
    leaving: str,
    admin: Actor,
    make_user: Callable[..., Actor],
    server: ServerThread,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hub writes a group's frames in slices with turns of the loop between them (streaming.hub
    WRITE_SLICE; 1 here). A member that leaves the group between two slices gets nothing written by the group:
    still subscribed (its stream woke: `close_lane`), it takes the pass's events through the stock path, byte for
    byte what its user's stock socket gets, each once and in order; ended (its access lost: `end`), it gets none
    of them, only its `complete`."""
    monkeypatch.setattr(hub_module, "WRITE_SLICE", 1)
    a = make_user(admin)
    cid = create_conversation(admin, "slices")
    join(admin, a, cid)
    root = start_thread(admin, cid, "root")
    users = {"admin": admin, "a": a}
    direct = {"admin": [sockets(admin, True)], "a": [sockets(a, True) for _ in range(3)]}
    stock = {name: sockets(actor, False) for name, actor in users.items()}
    everyone = [*stock.values(), *(c for cs in direct.values() for c in cs)]
    for client in everyone:
        client.subscribe(QUERY, {"c": cid}, op_id="1")
    wait_for(lambda: len(subscriptions(server, cid)) == 6, "the six subscriptions never registered")
    warm_up = start_thread(admin, cid, "warm-up")
    for client in everyone:
        frames_until(client, lambda m: warm_up in json.dumps(m["payload"]))
    wait_for(
        lambda: [len(g.members) for g in groups_of(server, cid)] == [4],
        "the direct subscriptions never formed one group",
    )

    # The next pass with frames for the whole group: before its second slice, its last member leaves.
    armed = [True]
    left: list[tuple[Any, list[int]]] = []  # (the member, the pass's event ids)
    original = LaneGroup.flushing

    def flushing(self: LaneGroup, slice_size: int) -> Generator[int, None, int]:
        victim = None
        if armed and self.pending and len(self.members) == 4:
            armed.clear()
            victim = list(self.members)[-1]  # the snapshot's order: written in the last slice
            left.append((victim, [e.id for e in self.events]))
        steps = original(self, slice_size)
        value: int | None = None
        while True:
            if value is not None and victim is not None:
                victim.close_lane() if leaving == "woken" else victim.end("access lost")
                victim = None
            try:
                value = next(steps)
            except StopIteration as done:
                return int(done.value)
            yield value

    monkeypatch.setattr(LaneGroup, "flushing", flushing)
    reply(admin, root, "from admin")  # thread.activity; unread.update to a; branch.current to admin
    last = start_thread(a, cid, "the end")
    wait_for(lambda: bool(left), "no pass wrote to the group")
    ((victim, pass_ids),) = left

    def is_last(message: dict[str, Any]) -> bool:
        event = next(iter(message["payload"]["data"].values()))
        return bool(event["type"] == "thread.new" and event["thread"]["root"]["id"] == last)

    def decode(cursor: str) -> int:
        return position(server, admin.tenant_id, cursor)

    def kept(frames: list[str]) -> dict[tuple[str, str], str]:
        return {
            key: raw
            for key, raw in by_cursor(frames, 0, decode).items()
            if events_of([raw])[0]["type"] not in IGNORED
        }

    ended = []
    delivered: set[int] = set()
    for name in users:
        expected = kept(frames_until(stock[name], is_last))
        delivered |= {decode(c) for _, c in expected}
        for client in direct[name]:
            frames, completed = read_frames(client, is_last, stop_at_complete=True)
            got = kept(frames)
            if completed:
                ended.append(got)
                continue
            assert got.keys() == expected.keys(), name  # by_cursor: each once, in order
            for key, raw in got.items():
                assert raw == expected[key], (name, key)
    assert delivered >= set(pass_ids)  # the pass had frames for the group's users
    if leaving == "woken":
        assert not ended and not victim.ended
    else:
        (got,) = ended  # the victim's socket: nothing of the pass it left in
        assert not {decode(c) for _, c in got} & set(pass_ids)
