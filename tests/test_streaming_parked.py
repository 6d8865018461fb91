"""Parked subscriptions (graphql.view `TransportWSHandler`, streaming.schema `Parked`): an idle conversation
stream whose direct lane takes its events gives up its operation task, stays registered, and wakes for what
the lane declines. Frames are compared with a socket that never parks in tests/test_streaming_direct.py; here:
that it parks, that it wakes and parks again, and that the protocol acts on a parked operation as on a running
one (complete, duplicate ids, closing the socket)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, ServerThread
from tests.ws import CONVERSATION_EVENTS, WsClient
from threadline.ids import Kind, decode_id


def subscriptions(server: ServerThread, cid: str) -> list[Any]:
    hub = server.app.state.services.hub
    return list(hub._by_conversation.get(decode_id(cid, Kind.CONVERSATION), ()))


def is_parked(sub: Any) -> bool:
    """Registered with its lane open, a way to wake, and no task of its operation."""
    lane = sub.lane
    return bool(
        sub.resume is not None and sub.lane_open and lane is not None and lane.socket._operation.task is None
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def parked(server: ServerThread, cid: str, count: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        subs = subscriptions(server, cid)
        return len(subs) == count and all(is_parked(s) for s in subs)

    return check


def parked_subscription(server: ServerThread, client: WsClient, actor: Actor) -> str:
    """A new conversation of `actor`'s, followed by `client` (operation "1") until its subscription parks."""
    cid = create_conversation(actor)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid})
    wait_for(parked(server, cid), "the idle subscription never parked")
    return cid


def next_root(client: WsClient) -> str:
    """The root content of the next thread.new on operation "1"."""
    event = client.events(1, ignore=("presence.update", "unread.update"))[0]
    assert event["type"] == "thread.new", event
    return str(event["thread"]["root"]["content"])


def test_an_idle_subscription_parks_wakes_for_what_its_lane_declines_and_parks_again(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    client = ws(admin)
    cid = parked_subscription(server, client, admin)
    (sub,) = subscriptions(server, cid)

    start_thread(admin, cid, "while parked")  # thread.new: the lane writes it, the subscription stays parked
    assert next_root(client) == "while parked"
    assert is_parked(sub)

    # membership.changed: the lane declines it (the stream checks access after it), the subscription wakes
    # and sends it through its stream, then parks again.
    member = make_user(admin)
    join(admin, member, cid)
    change = client.events(1, ignore=("presence.update", "unread.update"))[0]
    assert (change["type"], change["userId"]) == ("membership.changed", member.user_id)
    wait_for(parked(server, cid), "the subscription did not park again")
    assert subscriptions(server, cid) == [sub]

    start_thread(admin, cid, "parked again")
    assert next_root(client) == "parked again"


def test_complete_ends_a_parked_subscription_and_frees_its_id(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    client = ws(admin)
    cid = parked_subscription(server, client, admin)

    client.send({"id": "1", "type": "complete"})
    wait_for(lambda: not subscriptions(server, cid), "a completed parked subscription stayed in the hub")
    start_thread(admin, cid, "after complete")
    client.expect_quiet(0.5)

    # The id is free again (no 4409), and the new subscription streams (and parks) like the first.
    client.subscribe(CONVERSATION_EVENTS, {"c": cid})
    wait_for(parked(server, cid), "the second subscription never parked")
    start_thread(admin, cid, "second")
    assert next_root(client) == "second"


def test_a_duplicate_id_of_a_parked_subscription_closes_the_socket_with_4409(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    client = ws(admin)
    cid = parked_subscription(server, client, admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid})  # the same id, "1"
    with pytest.raises(ConnectionClosed) as closed:
        while True:  # events (presence) may come first
            assert client.receive(timeout=10)["type"] == "next"
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4409
    wait_for(lambda: not subscriptions(server, cid), "the closed socket's parked subscription stayed")


def test_a_closed_socket_ends_its_parked_subscriptions(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    first, second = create_conversation(admin), create_conversation(admin)
    client = ws(admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": first}, op_id="a")
    client.subscribe(CONVERSATION_EVENTS, {"c": second}, op_id="b")
    wait_for(lambda: parked(server, first)() and parked(server, second)(), "the subscriptions never parked")
    client.close()
    wait_for(
        lambda: not subscriptions(server, first) and not subscriptions(server, second),
        "a closed socket's parked subscriptions stayed in the hub",
    )


def test_a_subscription_with_direct_frames_off_never_parks(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    services = server.app.state.services
    original = services.settings
    services.settings = replace(original, stream_direct_frames=False)
    try:
        client = ws(admin)  # the socket's context reads the setting when it connects
    finally:
        services.settings = original
    cid = create_conversation(admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid})
    start_thread(admin, cid, "stock")
    assert next_root(client) == "stock"
    (sub,) = subscriptions(server, cid)
    assert sub.lane is None and sub.resume is None


def test_parked_subscriptions_of_one_query_share_an_executor_and_wake_with_their_own_context(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    join(admin, member, cid)
    ours, theirs = ws(admin), ws(member)
    ours.subscribe(CONVERSATION_EVENTS, {"c": cid})
    theirs.subscribe(CONVERSATION_EVENTS, {"c": cid})
    wait_for(parked(server, cid, 2), "the subscriptions never parked")
    first, second = subscriptions(server, cid)
    # One executor for both (the subscriptions' own are freed), without a socket's context in it.
    assert first.lane.executor is second.lane.executor
    assert first.lane.executor.context_value is None
    for sub in (first, second):
        assert sub.lane.own_executor().context_value is sub.lane.context

    start_thread(admin, cid, "shared")  # the lanes write it: the shared executor runs it
    for client in (ours, theirs):  # the member's join may come first (committed as the streams started)
        (event,) = client.events(1, ignore=("presence.update", "unread.update", "membership.changed"))
        assert event["thread"]["root"]["content"] == "shared"

    # membership.changed wakes both (their streams run with their own executors and contexts); the member's
    # removal ends the member's stream only, and the admin's parks again.
    other = make_user(admin)
    join(admin, other, cid)
    for client in (ours, theirs):
        change = client.events(1, ignore=("presence.update", "unread.update"))[0]
        assert (change["type"], change["userId"]) == ("membership.changed", other.user_id)
    wait_for(parked(server, cid, 2), "the subscriptions did not park again")
    start_thread(admin, cid, "again")
    assert next_root(ours) == "again"
    assert next_root(theirs) == "again"


def test_setup_slots_are_given_back_once_subscriptions_idle(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    from threadline.graphql import view

    cid = create_conversation(admin)
    clients = [ws(admin) for _ in range(3)]
    for client in clients:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid})
    wait_for(parked(server, cid, 3), "the subscriptions never parked")
    gates = [g for loop, g in view._SETUP_GATES.items() if not loop.is_closed()]
    assert gates, "no operation went through the setup gate"
    # Every slot is free again: the parked (idle) subscriptions hold none.
    wait_for(lambda: all(g._value == view.SETUPS_AT_ONCE for g in gates), "a setup slot stayed taken")
