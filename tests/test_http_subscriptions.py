"""Subscriptions without WebSockets (issue 21 item 8): conversationEvents and viewerEvents over HTTP with the
multipart subscription protocol Apollo Client and urql speak, against the real server with httpx streaming:
events arrive, `since` resumes without gap or duplicate, an unauthenticated caller is refused before any
stream, revocation ends an open stream, limits and the rate-limit draw apply, heartbeats keep it alive.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Actor, ServerThread
from tests.test_streaming import START, conversation, live
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS

ACCEPT = 'multipart/mixed;subscriptionSpec="1.0", application/json'  # what Apollo Client and urql send
KEY_CREATE = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { secret apiKey { id } } }'
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
ROLE_SET = "mutation($u: ID!, $r: Role!) { userRoleSet(userId: $u, role: $r) { id role } }"
# An upper bound for a loaded machine (two shared cores), not a latency claim.
SETTLE_SECONDS = 20.0
NOISE = ("presence.update", "unread.update", "membership.changed")
_END = object()


class MultipartSubscription:
    """One multipart subscription read in a background thread: its status, headers and parts (decoded JSON,
    heartbeats included as {}), in order."""

    def __init__(self, base_url: str, token: str | None, query: str, variables: dict[str, Any]) -> None:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(SETTLE_SECONDS))
        request = self.http.build_request(
            "POST", "/graphql", headers=headers, json={"query": query, "variables": variables}
        )
        self.response = self.http.send(request, stream=True)
        self.parts: queue.Queue[Any] = queue.Queue()
        self.raw = b""
        if self.streaming:
            threading.Thread(target=self._read, daemon=True).start()

    @property
    def streaming(self) -> bool:
        return self.response.headers.get("content-type", "").startswith("multipart/mixed")

    def _read(self) -> None:
        buffer = b""
        try:
            for chunk in self.response.iter_raw():
                self.raw += chunk
                buffer += chunk
                *complete, buffer = buffer.split(b"\r\n--graphql")
                for part in complete:
                    _, _, body = part.partition(b"\r\n\r\n")
                    if body.strip():
                        self.parts.put(json.loads(body))
        except (httpx.HTTPError, RuntimeError):
            pass
        finally:
            self.parts.put(_END)

    def part(self, timeout: float = SETTLE_SECONDS) -> Any:
        """The next part (a heartbeat is {}); _END when the stream is over."""
        return self.parts.get(timeout=timeout)

    def events(self, n: int, ignore: tuple[str, ...] = NOISE) -> list[dict[str, Any]]:
        """The next `n` events (other than the ignored types), failing on an error or the stream's end."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + SETTLE_SECONDS
        while len(got) < n:
            part = self.part(max(deadline - time.monotonic(), 0.01))
            assert part is not _END, f"the stream ended after {got}"
            if part == {}:
                continue
            payload = part["payload"]
            assert payload is not None and not payload.get("errors"), part
            event = next(iter(payload["data"].values()))
            if event["type"] not in ignore:
                got.append(event)
        return got

    def until_end(self) -> list[Any]:
        """Every part up to the end of the stream (heartbeats left out)."""
        got = []
        deadline = time.monotonic() + SETTLE_SECONDS
        while (part := self.part(max(deadline - time.monotonic(), 0.01))) is not _END:
            if part != {}:
                got.append(part)
        return got

    def close(self) -> None:
        self.response.close()
        self.http.close()


@pytest.fixture
def subscribe(server: ServerThread) -> Iterator[Callable[..., MultipartSubscription]]:
    opened: list[MultipartSubscription] = []

    def open_(
        actor: Actor | None, query: str, variables: dict[str, Any], token: str | None = None
    ) -> MultipartSubscription:
        sub = MultipartSubscription(server.url, token or (actor.api_key if actor else None), query, variables)
        opened.append(sub)
        return sub

    yield open_
    for sub in opened:
        sub.close()


def say(actor: Actor, cid: str, text: str) -> None:
    actor.client.ok(START, {"c": cid, "x": text})


def contents(events: list[dict[str, Any]]) -> list[str]:
    return [e["thread"]["root"]["content"] for e in events if e["type"] == "thread.new"]


def test_a_multipart_subscription_streams_a_conversations_events(
    admin: Actor, subscribe: Callable[..., MultipartSubscription]
) -> None:
    cid = conversation(admin)
    sub = subscribe(admin, CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    assert sub.response.status_code == 200
    assert sub.response.headers["content-type"].startswith(
        "multipart/mixed;boundary=graphql;subscriptionSpec=1.0"
    )
    assert sub.response.headers["cache-control"] == "no-cache, no-transform"
    assert sub.part() == {}  # the first heartbeat: the stream is open
    for text in ("one", "two"):
        say(admin, cid, text)
    events = sub.events(2)
    assert contents(events) == ["one", "two"]
    assert all(e["conversationId"] == cid for e in events)


def test_since_resumes_a_multipart_stream_without_gap_or_duplicate(
    admin: Actor, subscribe: Callable[..., MultipartSubscription]
) -> None:
    cid = conversation(admin)
    first = subscribe(admin, VIEWER_EVENTS, {"s": live(admin)})
    say(admin, cid, "before the drop")
    seen = first.events(1)
    first.close()  # the network drops the stream
    for text in ("missed one", "missed two"):
        say(admin, cid, text)

    resumed = subscribe(admin, VIEWER_EVENTS, {"s": seen[-1]["cursor"]})
    replayed = resumed.events(2)
    say(admin, cid, "live again")
    assert contents(replayed + resumed.events(1)) == ["missed one", "missed two", "live again"]
    assert len({e["cursor"] for e in seen + replayed}) == 3


def test_an_unauthenticated_multipart_subscription_is_refused_before_any_stream(
    admin: Actor, subscribe: Callable[..., MultipartSubscription]
) -> None:
    cid = conversation(admin)
    for token in (None, "not-a-key"):
        refused = subscribe(None, CONVERSATION_EVENTS, {"c": cid}, token=token)
        assert refused.response.status_code == 401
        assert not refused.streaming
        assert refused.response.headers["www-authenticate"] == "Bearer"
        body = json.loads(refused.response.read())
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_conversation_the_caller_cannot_read_ends_the_stream_with_the_error(
    admin: Actor, make_user: Callable[..., Actor], subscribe: Callable[..., MultipartSubscription]
) -> None:
    outsider = make_user(admin)
    sub = subscribe(outsider, CONVERSATION_EVENTS, {"c": conversation(admin)})
    parts = sub.until_end()
    assert [p["payload"]["errors"][0]["extensions"]["code"] for p in parts] == ["NOT_FOUND"]
    assert sub.raw.endswith(b"\r\n--graphql--\r\n")
