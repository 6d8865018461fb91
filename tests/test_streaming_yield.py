"""A subscription that starts (live, or resuming with `since`) while the stream hub lets the loop run between the
write slices of one lane group (`StreamHub._write_out`), and would join another group of its conversation whose
frames of that pass are still to be written, gets each event once and in order (issue 15: sliced writes)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Generator
from typing import Any

import pytest

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, ServerThread
from tests.test_streaming_direct import frames_until, sockets  # noqa: F401
from tests.test_streaming_groups import QUERY, groups_of
from tests.test_streaming_parked import subscriptions, wait_for
from tests.ws import WsClient, position
from threadline.streaming import hub as hub_module
from threadline.streaming.direct import LaneGroup


class _Shim:
    def __init__(self) -> None:
        self.hold: Callable[[], bool] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, *a: Any) -> Any:
        if delay == 0 and self.hold is not None:
            cond, self.hold = self.hold, None
            deadline = time.monotonic() + 8
            while not cond() and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            return None
        return await asyncio.sleep(delay, *a)


@pytest.mark.parametrize("resume", ["since", "live"])
def test_a_subscription_starting_between_write_slices_gets_each_event_once(
    resume: str,
    admin: Actor,
    make_user: Callable[..., Actor],
    server: ServerThread,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "WRITE_SLICE", 1)
    monkeypatch.setattr(hub_module, "YIELD_BUDGET_SECONDS", 100.0)
    monkeypatch.setattr(hub_module.StreamHub, "_database_in_use", lambda self: True)
    shim = _Shim()
    monkeypatch.setattr(hub_module, "asyncio", shim)
    a = make_user(admin)
    cid = create_conversation(admin, "yield-join")
    join(admin, a, cid)
    g1 = [sockets(admin, True), sockets(a, True)]
    for c in g1:
        c.subscribe(QUERY, {"c": cid}, op_id="1")
    wait_for(lambda: len(subscriptions(server, cid)) == 2, "g1 never registered")
    warm = start_thread(admin, cid, "warm")
    for c in g1:
        raws = frames_until(c, lambda m: warm in json.dumps(m["payload"]))
    before = next(iter(json.loads(raws[-1])["payload"]["data"].values()))["cursor"]
    QS = QUERY.replace("subscription($c: ID!)", "subscription($c: ID!, $s: String)").replace(
        "conversationEvents(conversationId: $c)", "conversationEvents(conversationId: $c, since: $s)"
    )
    g2 = sockets(a, True)
    g2.subscribe(QS, {"c": cid, "s": before if resume == "since" else None}, op_id="2")
    wait_for(lambda: len(subscriptions(server, cid)) == 3, "g2 never registered")
    warm2 = start_thread(admin, cid, "warm2")
    frames_until(g2, lambda m: warm2 in json.dumps(m["payload"]))
    for c in g1:
        frames_until(c, lambda m: warm2 in json.dumps(m["payload"]))
    wait_for(lambda: sorted(len(g.members) for g in groups_of(server, cid)) == [1, 2], "groups not formed")
    (G2,) = [g for g in groups_of(server, cid) if g.frame_key.startswith("2\x00")]

    armed = [True]
    seen: list[list[int]] = []
    original = LaneGroup.flushing

    def flushing(self: LaneGroup, slice_size: int) -> Generator[int, None, int]:
        if armed and self.pending and self.frame_key.startswith("1\x00") and G2.pending:
            armed.clear()
            seen.append([e.id for e in self.events])
            # The hub waits between the slices until the new subscription joined G2, or opened its lane elsewhere.
            shim.hold = lambda: (
                len(G2.members) == 2
                or (
                    len(subscriptions(server, cid)) == 4
                    and all(x.lane_open for x in subscriptions(server, cid))
                )
            )
        return (yield from original(self, slice_size))

    monkeypatch.setattr(LaneGroup, "flushing", flushing)
    start_thread(admin, cid, "the pass")
    wait_for(lambda: bool(seen), "no pass")
    z = sockets(a, True)
    variables: dict[str, Any] = {"c": cid, "s": before if resume == "since" else None}
    q = QS
    z.subscribe(q, variables, op_id="2")
    end = start_thread(admin, cid, "the end")
    frames = frames_until(z, lambda m: end in json.dumps(m["payload"]))
    events = [next(iter(json.loads(r)["payload"]["data"].values())) for r in frames]
    ids = [
        position(server, admin.tenant_id, e["cursor"])
        for e in events
        if e["type"] not in ("presence.update", "typing.update")
    ]
    assert len(ids) == len(set(ids)), f"duplicates: {ids}"
    assert ids == sorted(ids), f"out of order: {ids}"
