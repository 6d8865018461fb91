"""A subscription cancelled while its send is blocked leaves the hub at once (streaming.schema `own`, `finish`).

A client that stops reading fills its socket's buffers until the server's `next` for its subscription waits for
the buffer to drain. When the subscription ends there (the client completes it, or its socket goes away), its
operation's task is cancelled mid-send and the generators of its stream stay suspended where they yielded. Their
`finally` runs only once the event loop's async-generator finaliser sees them freed: promptly when nothing else
holds them, but a reference cycle or a kept traceback (a log handler's record) puts that off until a garbage
collection, or forever, and the hub kept routing every event of the conversation to the dead subscriber meanwhile.

Here the collector is off (nothing but the code can release anything) and, in the first two tests, the stream's
generators are held the way such a reference would hold them: the hub's subscriber count for the conversation is
back where it was all the same, and the dead subscriber's queue is let go.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.harness import Actor, ServerThread
from tests.test_recheck_stalled_socket import fill, server_side
from tests.test_streaming import REPLY, START, conversation, live
from tests.ws import CONVERSATION_EVENTS, StalledWsClient
from threadline.ids import Kind, decode_id

# An upper bound for a loaded machine (two shared cores), not a latency claim.
SETTLE_SECONDS = 30.0
BIG = "x" * 200_000  # a few of these fill a socket whose client does not read


def registered(server: ServerThread, cid: str) -> list[Any]:
    """The subscribers the hub routes this conversation's events to."""
    hub = server.app.state.services.hub
    while True:
        try:
            return list(hub._by_conversation.get(decode_id(cid, Kind.CONVERSATION), ()))
        except RuntimeError:  # the set changed while this thread copied it: copy again
            time.sleep(0.01)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = SETTLE_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@contextmanager
def no_garbage_collection() -> Iterator[None]:
    """The cyclic collector off: what is released meanwhile is released by the code, not found by the collector."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def stream_generators(sub: Any) -> list[Any]:
    """The suspended async generators of `sub`'s stream (streaming.schema `_stream`, `live`), found without a
    collection: what a kept traceback or a reference cycle would hold."""
    found = []
    for obj in gc.get_objects():
        if type(obj).__name__ == "async_generator":
            frame = obj.ag_frame
            if frame is not None and frame.f_locals.get("sub") is sub:
                found.append(obj)
    return found


def operation_task(sub: Any) -> Any:
    lane = sub.lane
    operation = lane.socket._operation if lane is not None else None
    return getattr(operation, "task", None)


def replaying_to_a_stalled_client(
    server: ServerThread, admin: Actor, cid: str, root: str
) -> tuple[StalledWsClient, Any]:
    """A client that subscribes with `since` before a few MB of events and never reads: its subscription's task
    waits in the send of its replay, with live events queued behind it."""
    since = live(admin)
    for _ in range(30):
        admin.client.ok(REPLY, {"p": root, "x": BIG})
    stalled = StalledWsClient(server.ws_url, admin.api_key, CONVERSATION_EVENTS, {"c": cid, "s": since})
    protocol = server_side(server, stalled)
    wait_for(lambda: len(registered(server, cid)) == 1, "the stalled socket never subscribed")
    (sub,) = registered(server, cid)
    wait_for(
        lambda: not protocol.writable.is_set(), "the server's writes to the stalled socket never backed up"
    )
    for n in range(3):
        admin.client.ok(REPLY, {"p": root, "x": f"queued {n}"})
    wait_for(lambda: bool(sub.queue), "the live events were not queued")
    task = operation_task(sub)
    assert task is not None and not task.done()  # still replaying: blocked in its send
    return stalled, sub


def test_a_subscription_completed_while_its_replay_is_blocked_in_send_leaves_the_hub(
    admin: Actor, server: ServerThread
) -> None:
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    assert registered(server, cid) == []
    stalled, sub = replaying_to_a_stalled_client(server, admin, cid, root)
    held = stream_generators(sub)
    try:
        assert held, "the stream's generators were not found"
        with no_garbage_collection():
            # The client ends the subscription (it can still write): strawberry cancels the operation's task,
            # which waits in its send; the socket stays open.
            stalled._send({"id": "1", "type": "complete"})
            wait_for(lambda: registered(server, cid) == [], "the completed subscription stayed in the hub")
            assert sub.queue is None  # what was queued for it is let go
            assert sub.ended is not None  # routing skips it, whatever still holds it
    finally:
        held.clear()  # the stream's generators are finalised now (a failure's traceback must not keep them)
        stalled.close()


def test_a_subscription_whose_socket_closes_while_its_replay_is_blocked_in_send_leaves_the_hub(
    admin: Actor, server: ServerThread
) -> None:
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    assert registered(server, cid) == []
    stalled, sub = replaying_to_a_stalled_client(server, admin, cid, root)
    held = stream_generators(sub)
    try:
        assert held, "the stream's generators were not found"
        with no_garbage_collection():
            stalled.close()  # with unread data in its buffer: the connection is reset
            wait_for(lambda: registered(server, cid) == [], "the disconnected subscription stayed in the hub")
            assert sub.queue is None
            assert sub.ended is not None
            admin.client.ok(REPLY, {"p": root, "x": "after"})  # routed to nobody of that socket
            assert registered(server, cid) == [] and sub.queue is None
    finally:
        held.clear()
        stalled.close()


def test_a_live_subscription_whose_socket_closes_while_its_send_is_blocked_leaves_the_hub_and_its_queue(
    admin: Actor, server: ServerThread
) -> None:
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    stalled = StalledWsClient(server.ws_url, admin.api_key, CONVERSATION_EVENTS, {"c": cid})
    try:
        protocol = server_side(server, stalled)
        wait_for(lambda: len(registered(server, cid)) == 1, "the stalled socket never subscribed")
        (sub,) = registered(server, cid)
        fill(admin, root, protocol)
        # Events the paused transport's lane declines: queued, and the stream's task (woken from its park) is
        # sending them while the buffer is full.
        for n in range(3):
            admin.client.ok(REPLY, {"p": root, "x": f"queued {n}"})

        def sending() -> bool:
            task = operation_task(sub)
            return task is not None and not task.done() and not sub.lane_open and bool(sub.queue)

        wait_for(sending, "the stream's task never blocked in its send with events queued")
        with no_garbage_collection():
            stalled.close()
            wait_for(lambda: registered(server, cid) == [], "the disconnected subscription stayed in the hub")
            assert sub.queue is None
            assert sub.ended is not None
    finally:
        stalled.close()
