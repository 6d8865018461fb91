"""The client address behind a trusted proxy (THREADLINE_TRUSTED_PROXIES) and the bound on anonymous windows.

Operations without credentials are counted per client address (THREADLINE_RATE_LIMIT_ANONYMOUS). Behind a load
balancer every caller has the balancer's address; with the setting, a request from a trusted proxy is counted as
the rightmost X-Forwarded-For / Forwarded hop that is not itself a trusted proxy, and from anyone else as its peer
(uvicorn's own handling, which trusted X-Forwarded-For from 127.0.0.1, is off under `threadline serve`).

The proxy tests run `threadline serve` itself (its uvicorn settings are under test) and connect from real loopback
addresses: the server trusts 127.0.0.2 and 127.0.0.4, so a connection bound to 127.0.0.2 is a trusted proxy and
one from 127.0.0.1 an untrusted peer. The server's anonymous windows live in its process, so each test uses
client addresses of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Loop, ServerThread, create_admin, serve_process, test_settings

INTROSPECT = {"query": "{ __schema { queryType { name } } }"}
LIMIT = 3
PROXY = "127.0.0.2"  # trusted
OTHER_PROXY = "127.0.0.4"  # trusted, for the malformed headers' own window
DIRECT = "127.0.0.1"  # not trusted


@pytest.fixture(scope="module")
def proxied(dsn: str) -> Iterator[str]:
    with serve_process(
        dsn,
        THREADLINE_RATE_LIMIT_ANONYMOUS=str(LIMIT),
        THREADLINE_RATE_LIMIT_WINDOW_SECONDS="3600",
        THREADLINE_TRUSTED_PROXIES=f"{PROXY}/32,{OTHER_PROXY}",
        THREADLINE_SHARE_READS_PER_ADDRESS="2",
        THREADLINE_SHARE_READS_PER_TOKEN="1000",
        THREADLINE_SHARE_RATE_WINDOW_SECONDS="3600",
        THREADLINE_RUN_WORKERS="0",
    ) as url:
        yield url


def introspect(url: str, source: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """An anonymous introspection over a connection from `source` (a loopback address of this host)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.post(f"{url}/graphql", json=INTROSPECT, headers=headers or {})


def statuses(url: str, source: str, headers: dict[str, str], times: int) -> list[int]:
    return [introspect(url, source, headers).status_code for _ in range(times)]


def refused_as_anonymous(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return False
    extensions = response.json()["errors"][0]["extensions"]
    return bool(extensions["code"] == "RATE_LIMITED" and extensions["budget"] == "anonymous")


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_window(proxied: str) -> None:
    first = {"X-Forwarded-For": "198.51.100.1"}
    assert statuses(proxied, PROXY, first, LIMIT) == [200] * LIMIT
    assert refused_as_anonymous(introspect(proxied, PROXY, first))
    # Another client through the same proxy is not locked out by the first.
    assert statuses(proxied, PROXY, {"X-Forwarded-For": "198.51.100.2"}, LIMIT) == [200] * LIMIT
    # RFC 7239 Forwarded names a client too (an IPv6 one: its /64).
    forwarded = {"Forwarded": 'for="[2001:db8:5:6::1]:4711";proto=https'}
    assert statuses(proxied, PROXY, forwarded, LIMIT) == [200] * LIMIT
    same_64 = {"Forwarded": 'for="[2001:db8:5:6::99]"'}
    assert refused_as_anonymous(introspect(proxied, PROXY, same_64))
    # A hop that is itself a trusted proxy is skipped: the client is left of it.
    chained = {"X-Forwarded-For": f"198.51.100.1, {OTHER_PROXY}"}
    assert refused_as_anonymous(introspect(proxied, PROXY, chained))


def test_a_spoofed_leftmost_hop_gives_no_fresh_window(proxied: str) -> None:
    client = "198.51.100.10"
    assert statuses(proxied, PROXY, {"X-Forwarded-For": client}, LIMIT) == [200] * LIMIT
    # The client sends a header of its own; the proxy appends the address it sees. Only the latter counts.
    for spoofed in ("203.0.113.1", "203.0.113.2", "198.51.100.11", "garbage"):
        response = introspect(proxied, PROXY, {"X-Forwarded-For": f"{spoofed}, {client}"})
        assert refused_as_anonymous(response), spoofed
        response = introspect(proxied, PROXY, {"Forwarded": f"for={spoofed}, for={client}"})
        assert refused_as_anonymous(response), spoofed
    # Two header lines: the proxy's is the last.
    two_lines = [("X-Forwarded-For", "203.0.113.3"), ("X-Forwarded-For", client)]
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY), timeout=30) as http:
        assert refused_as_anonymous(http.post(f"{proxied}/graphql", json=INTROSPECT, headers=two_lines))
    # The header is read (another client still gets a window of its own).
    assert introspect(proxied, PROXY, {"X-Forwarded-For": "198.51.100.11"}).status_code == 200


def test_an_untrusted_peers_forwarded_headers_are_ignored(proxied: str) -> None:
    """127.0.0.1 is not in THREADLINE_TRUSTED_PROXIES: its headers name nobody (uvicorn trusted it by default)."""
    claims = [
        {"X-Forwarded-For": f"198.51.100.{20 + i}", "Forwarded": f"for=198.51.100.{20 + i}"}
        for i in range(LIMIT + 2)
    ]
    answers = [introspect(proxied, DIRECT, claim) for claim in claims]
    assert [a.status_code for a in answers[:LIMIT]] == [200] * LIMIT
    assert all(refused_as_anonymous(a) for a in answers[LIMIT:])


def test_malformed_forwarded_headers_fall_back_to_the_peer_without_failing(proxied: str) -> None:
    malformed = [
        {"X-Forwarded-For": "garbage"},
        {"X-Forwarded-For": ""},
        {"X-Forwarded-For": "198.51.100.30, not-an-address"},
        {"X-Forwarded-For": "198.51.100.31,,"},
        {"X-Forwarded-For": "unknown"},
        {"X-Forwarded-For": "[2001:db8::1"},
        {"X-Forwarded-For": "198.51.100.32:port"},
        {"X-Forwarded-For": ", ".join(["198.51.100.33"] + [OTHER_PROXY] * 200)},  # past the hops read
        {"X-Forwarded-For": OTHER_PROXY},  # every hop a trusted proxy
        {"Forwarded": "for=unknown"},
        {"Forwarded": "for=_hidden"},
        {"Forwarded": "proto=https"},
        {"Forwarded": 'for="198.51.100.34'},
        # Both headers, naming different clients: a proxy that writes one passes the other through.
        {"X-Forwarded-For": "198.51.100.35", "Forwarded": "for=198.51.100.36"},
    ]
    answers = [introspect(proxied, OTHER_PROXY, headers) for headers in malformed]
    # None fails, none gets a window of its own: all are the proxy's, which allows LIMIT.
    assert [a.status_code for a in answers[:LIMIT]] == [200] * LIMIT
    assert all(refused_as_anonymous(a) for a in answers[LIMIT:])
    # A well-formed header through the same proxy still names its client.
    assert introspect(proxied, OTHER_PROXY, {"X-Forwarded-For": "198.51.100.37"}).status_code == 200


def test_share_link_reads_are_counted_per_forwarded_client(proxied: str, loop: Loop, dsn: str) -> None:
    """The shared links' per-address window (THREADLINE_SHARE_READS_PER_ADDRESS) takes the same address."""
    admin = create_admin(loop, dsn, proxied)
    try:
        conversation = create_conversation(admin, "shared")
        start_thread(admin, conversation, "hello")
        token = admin.client.ok(
            "mutation($c: ID!) { shareLinkCreate(conversationId: $c) { token } }", {"c": conversation}
        )["shareLinkCreate"]["token"]
    finally:
        admin.client.http.close()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY), timeout=30) as http:

        def read(client: str) -> int:
            page = http.get(f"{proxied}/share/{token}", headers={"X-Forwarded-For": client})
            return page.status_code

        assert [read("198.51.100.40") for _ in range(3)] == [200, 200, 429]
        assert read("203.0.113.40, 198.51.100.40") == 429
        assert read("198.51.100.41") == 200


def test_share_link_reads_count_an_ipv6_client_by_its_64(proxied: str, loop: Loop, dsn: str) -> None:
    """As the anonymous windows: one host holds a whole /64, so a window per IPv6 address gave it one per guess of
    a token (page and `sharedConversation` alike); another /64 has its own."""
    admin = create_admin(loop, dsn, proxied)
    try:
        conversation = create_conversation(admin, "shared v6")
        start_thread(admin, conversation, "hello")
        token = admin.client.ok(
            "mutation($c: ID!) { shareLinkCreate(conversationId: $c) { token } }", {"c": conversation}
        )["shareLinkCreate"]["token"]
    finally:
        admin.client.http.close()
    shared = "query($t: String!) { sharedConversation(token: $t) { title } }"
    with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY), timeout=30) as http:

        def page(client: str) -> int:
            return http.get(f"{proxied}/share/{token}", headers={"X-Forwarded-For": client}).status_code

        def graphql(client: str) -> int:
            body = {"query": shared, "variables": {"t": token}}
            response = http.post(f"{proxied}/graphql", json=body, headers={"X-Forwarded-For": client})
            errors = response.json().get("errors") or []
            return 429 if errors and errors[0]["extensions"]["code"] == "RATE_LIMITED" else 200

        net = "2001:db8:5a:6b"  # a /64 no other test of the module's server counts in
        assert page(f"{net}::1") == 200
        assert graphql(f"{net}::2") == 200
        assert page(f"{net}:ffff::3") == 429
        assert graphql(f"{net}::4") == 429
        assert page("2001:db8:5a:6c::1") == 200


def test_rotating_through_more_addresses_than_the_table_holds_resets_no_one(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows are kept for at most ANONYMOUS_ADDRESSES_MAX addresses (20 here, 10,000 in production). A client
    rotating through more real source addresses (127.1.x.y, each its own TCP peer) used to push out the oldest
    windows, resetting their counts; now newcomers share wider windows and the victim stays refused."""
    from threadline.ratelimits import service

    table = 20
    monkeypatch.setattr(service, "ANONYMOUS_ADDRESSES_MAX", table)
    monkeypatch.setattr(service, "anonymous_windows", service.AnonymousWindows())
    srv = ServerThread(
        test_settings(dsn, migrate_on_start=False, rate_limit_anonymous=LIMIT, rate_limit_window_seconds=3600)
    )
    srv.start()
    try:
        victim = "127.0.0.1"
        assert statuses(srv.url, victim, {}, LIMIT) == [200] * LIMIT
        assert refused_as_anonymous(introspect(srv.url, victim))
        rotation = [f"127.1.{block}.{host}" for block in range(4) for host in range(1, 16)]  # 60 > 20
        answered = [introspect(srv.url, source).status_code for source in rotation]
        assert set(answered) <= {200, 429}
        assert refused_as_anonymous(introspect(srv.url, victim))  # its count was not reset
        windows = service.anonymous_windows
        assert len(windows._windows) <= table
        assert len(windows._prefixes) <= service.ANONYMOUS_PREFIXES_MAX
        assert len(windows._overflow) <= 1
    finally:
        srv.stop()


def test_the_setting_takes_cidrs_and_addresses_and_refuses_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from threadline.settings import Settings

    monkeypatch.setenv("THREADLINE_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,2001:db8::/32")
    assert Settings.from_env().trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    monkeypatch.setenv("THREADLINE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
    with pytest.raises(ValueError, match="THREADLINE_TRUSTED_PROXIES"):
        Settings.from_env()
    monkeypatch.delenv("THREADLINE_TRUSTED_PROXIES")
    assert Settings.from_env().trusted_proxies == ()
