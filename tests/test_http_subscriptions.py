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
import jwt
import pytest

from tests.harness import METRICS_HEADERS, TEST_JWT_SECRET, Actor, Client, ServerThread
from tests.test_hostile_credentials import member_with_key, other, token  # noqa: F401 - `other`: a fixture
from tests.test_ratelimits import assign, profile
from tests.test_streaming import START, conversation, join, live
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS

ACCEPT = 'multipart/mixed;subscriptionSpec="1.0", application/json'  # what Apollo Client and urql send
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
ROLE_SET = "mutation($u: ID!, $r: Role!) { userRoleSet(userId: $u, role: $r) { id role } }"
ERASE = "mutation($u: ID!) { userErase(userId: $u) { __typename } }"
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
        actor: Actor | None,
        query: str,
        variables: dict[str, Any],
        token: str | None = None,
        base_url: str | None = None,
    ) -> MultipartSubscription:
        secret = token or (actor.api_key if actor else None)
        sub = MultipartSubscription(base_url or server.url, secret, query, variables)
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
    for secret in (None, "not-a-key"):
        refused = subscribe(None, CONVERSATION_EVENTS, {"c": cid}, token=secret)
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


def end_error(sub: MultipartSubscription) -> str:
    """The code of the transport error that ended the stream (`{"payload": null, "errors": [...]}`)."""
    parts = [p for p in sub.until_end() if p.get("payload") is None]
    assert len(parts) == 1, parts
    assert sub.raw.endswith(b"\r\n--graphql--\r\n")
    return str(parts[0]["errors"][0]["extensions"]["code"])


def test_revoking_a_key_ends_its_http_streams_in_every_process_and_spares_the_users_other_keys(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: ServerThread,
    other: str,  # noqa: F811 - the fixture
    subscribe: Callable[..., MultipartSubscription],
) -> None:
    member, secret, key_id = member_with_key(admin, make_user)
    cid = conversation(admin)
    since = {"s": live(admin)}  # so that no stream misses the first event, however late it starts
    here = subscribe(member, VIEWER_EVENTS, since, token=secret)
    there = subscribe(member, VIEWER_EVENTS, since, token=secret, base_url=other)
    kept = subscribe(member, VIEWER_EVENTS, since, base_url=other)  # the same user, another key
    join(admin, member, cid)
    say(admin, cid, "all three are live")
    for sub in (here, there, kept):
        assert contents(sub.events(1)) == ["all three are live"]

    admin.client.ok(KEY_REVOKE, {"k": key_id})

    assert end_error(here) == "UNAUTHENTICATED"
    assert end_error(there) == "UNAUTHENTICATED"
    say(admin, cid, "after the revocation")
    assert contents(kept.events(1)) == ["after the revocation"]
    assert subscribe(member, VIEWER_EVENTS, {}, token=secret).response.status_code == 401


def test_erasing_a_user_ends_their_http_streams_api_key_and_jwt(
    admin: Actor,
    make_user: Callable[..., Actor],
    other: str,  # noqa: F811 - the fixture
    subscribe: Callable[..., MultipartSubscription],
) -> None:
    member = make_user(admin)
    stream = subscribe(member, VIEWER_EVENTS, {}, base_url=other)
    bearer = token(admin.tenant_id, "jay")
    jay = subscribe(None, VIEWER_EVENTS, {}, token=bearer)
    as_jay = Client(other, bearer)
    jay_id = as_jay.ok("{ viewer { id } }")["viewer"]["id"]
    as_jay.close()
    assert stream.part() == {} and jay.part() == {}

    admin.client.ok(ERASE, {"u": member.user_id})
    assert end_error(stream) == "UNAUTHENTICATED"
    admin.client.ok(ERASE, {"u": jay_id})
    assert end_error(jay) == "UNAUTHENTICATED"


def test_a_role_change_ends_an_http_stream_the_new_role_cannot_read(
    admin: Actor,
    make_user: Callable[..., Actor],
    other: str,  # noqa: F811 - the fixture
    subscribe: Callable[..., MultipartSubscription],
) -> None:
    boss = make_user(admin, "ADMIN")
    cid = conversation(admin)  # boss is not a participant: reads it as a tenant admin only
    sub = subscribe(boss, CONVERSATION_EVENTS, {"c": cid, "s": live(admin)}, base_url=other)
    say(admin, cid, "for admins")
    assert contents(sub.events(1)) == ["for admins"]

    admin.client.ok(ROLE_SET, {"u": boss.user_id, "r": "MEMBER"})

    # The stream completes (as a socket's operation does); the key still holds, so no transport error.
    assert sub.until_end() == []
    assert sub.raw.endswith(b"\r\n--graphql--\r\n")


def test_the_subscription_rate_limit_draws_for_http_streams(
    admin: Actor, make_user: Callable[..., Actor], subscribe: Callable[..., MultipartSubscription]
) -> None:
    member = make_user(admin)
    assign(admin, member, profile(admin, "one stream", subscriptionsPerWindow=1))
    cid = conversation(admin)
    join(admin, member, cid)
    first = subscribe(member, VIEWER_EVENTS, {"s": live(admin)})
    say(admin, cid, "the first stream runs")  # once an event arrived, its start was drawn
    assert contents(first.events(1)) == ["the first stream runs"]
    refused = subscribe(member, VIEWER_EVENTS, {})
    parts = refused.until_end()
    errors = [e for p in parts for e in (p["payload"] or {}).get("errors") or ()]
    assert [(e["extensions"]["code"], e["extensions"]["budget"]) for e in errors] == [
        ("RATE_LIMITED", "subscriptions")
    ]
    say(admin, cid, "the first stream still runs")
    assert contents(first.events(1)) == ["the first stream still runs"]


def test_query_limits_apply_to_http_subscriptions(
    admin: Actor, subscribe: Callable[..., MultipartSubscription]
) -> None:
    aliases = " ".join(f"a{i}: type" for i in range(31))  # one past THREADLINE_QUERY_MAX_ALIASES
    sub = subscribe(admin, "subscription { viewerEvents { " + aliases + " } }", {})
    # Refused before it runs: the one part carries the error (as any GraphQL error in this protocol), then the end.
    [part] = sub.until_end()
    error = part["payload"]["errors"][0]
    assert (error["extensions"]["limitName"], error["extensions"]["actual"]) == ("aliases", 31)
    assert "data" not in part["payload"]


def metric(text: str, sample: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " "))


def test_http_streams_show_in_the_metrics(
    admin: Actor, server: ServerThread, subscribe: Callable[..., MultipartSubscription]
) -> None:
    def scrape() -> str:
        return httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text

    # A stream is counted once it ends, under its own transport (its lifetime is not a request's latency).
    ended = 'threadline_http_requests_total{status="200",transport="multipart"}'
    before = scrape()
    cid = conversation(admin)
    sub = subscribe(admin, CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    say(admin, cid, "counted")
    assert contents(sub.events(1)) == ["counted"]
    during = scrape()
    assert metric(during, "threadline_subscriptions_active") >= 1
    sub.close()  # the server sees the client gone at its next write (a heartbeat at the latest)
    deadline = time.monotonic() + SETTLE_SECONDS
    while metric(scrape(), ended) == metric(before, ended):
        assert time.monotonic() < deadline, "the closed stream was never counted"
        time.sleep(0.2)
    # At least: streams of earlier tests, closed by their clients, may end meanwhile and count too.
    # The operation is counted as its execution ends, which may come after the request's count on a loaded machine.
    subscriptions = 'threadline_graphql_operations_total{type="subscription"}'
    deadline = time.monotonic() + SETTLE_SECONDS
    while metric(scrape(), subscriptions) - metric(before, subscriptions) < 1:
        assert time.monotonic() < deadline, "the ended subscription was never counted as an operation"
        time.sleep(0.2)


def test_an_http_stream_keeps_alive_with_heartbeats_and_ends_when_its_jwt_expires(
    admin: Actor, subscribe: Callable[..., MultipartSubscription]
) -> None:
    claims = {"sub": "brief", "tenant": admin.tenant_id, "role": "MEMBER", "exp": int(time.time() + 8)}
    sub = subscribe(None, VIEWER_EVENTS, {}, token=jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256"))
    assert sub.response.status_code == 200
    # No event for a while: `{}` parts (one at once, then every 5 seconds) keep proxies from closing the stream.
    assert [sub.part(), sub.part()] == [{}, {}]
    assert end_error(sub) == "UNAUTHENTICATED"
