"""Review of dc7b79a (THREADLINE_TRUSTED_PROXIES): the client address a test server derives is the product's, and a
trusted proxy written in its IPv4-mapped IPv6 form is trusted.

The servers run in this process (tests.harness.ServerThread) with anonymous windows of their own (a fresh
`AnonymousWindows` per test), and connections come from real loopback addresses: 127.0.0.1 is never trusted here.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import ServerThread, test_settings

INTROSPECT = {"query": "{ __schema { queryType { name } } }"}
LIMIT = 3


def introspect(url: str, source: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """An anonymous introspection over a connection from `source` (a loopback address of this host)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as http:
        return http.post(f"{url}/graphql", json=INTROSPECT, headers=headers or {})


def refused_as_anonymous(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return False
    extensions = response.json()["errors"][0]["extensions"]
    return bool(extensions["code"] == "RATE_LIMITED" and extensions["budget"] == "anonymous")


@pytest.fixture
def serve(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ServerThread]]:
    """Starts test servers counting anonymous operations (LIMIT a window) in windows of this test's own."""
    from threadline.ratelimits import service

    monkeypatch.setattr(service, "anonymous_windows", service.AnonymousWindows())
    started: list[ServerThread] = []

    class Server(ServerThread):
        def __init__(self, **overrides: object) -> None:
            super().__init__(
                test_settings(
                    dsn,
                    migrate_on_start=False,
                    rate_limit_anonymous=LIMIT,
                    rate_limit_window_seconds=3600,
                    **overrides,
                )
            )
            self.start()
            started.append(self)

    yield Server
    for server in started:
        server.stop()


def test_a_test_server_like_threadline_serve_takes_no_forwarded_header_from_loopback(
    serve: type[ServerThread],
) -> None:
    """uvicorn's own proxy-header handling trusted X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS): the test
    servers had it on while `threadline serve` turns it off, so a test of the client address through them saw
    an address the product would not."""
    server = serve()
    answers = [
        introspect(server.url, "127.0.0.1", {"X-Forwarded-For": f"198.51.100.{60 + i}"})
        for i in range(LIMIT + 1)
    ]
    assert [a.status_code for a in answers[:LIMIT]] == [200] * LIMIT
    assert refused_as_anonymous(answers[LIMIT])  # all were 127.0.0.1's


@pytest.mark.parametrize(
    ("listed", "network"), [("::ffff:127.0.0.2", "127.0.0.2/32"), ("::ffff:127.0.0.0/120", "127.0.0.0/24")]
)
def test_a_trusted_proxy_listed_in_its_ipv4_mapped_form_is_trusted(
    serve: type[ServerThread], listed: str, network: str
) -> None:
    """A dual-stack listener shows an IPv4 proxy as ::ffff:a.b.c.d (its access log too); listed so, it was never
    matched (the peer is compared as IPv4): every client behind it shared the proxy's window."""
    from threadline.ratelimits.addresses import parse_networks

    server = serve(trusted_proxies=(listed,))
    first = {"X-Forwarded-For": "198.51.100.70"}
    assert [introspect(server.url, "127.0.0.2", first).status_code for _ in range(LIMIT)] == [200] * LIMIT
    assert refused_as_anonymous(introspect(server.url, "127.0.0.2", first))
    # Another client through the same proxy has a window of its own.
    assert introspect(server.url, "127.0.0.2", {"X-Forwarded-For": "198.51.100.71"}).status_code == 200
    # The mapped form is the IPv4 network it names.
    assert [str(n) for n in parse_networks([listed])] == [network]
