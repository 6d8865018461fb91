"""Hostile callers against authentication: what one valid credential can make a server hold."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Actor, ServerThread, test_settings

VIEWER = "{ viewer { id } }"


@pytest.fixture(scope="module")
def cached(dsn: str) -> Iterator[ServerThread]:
    """An in-process server whose credential cache keeps entries for an hour (the default is a second)."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, credential_cache_seconds=3600.0))
    srv.start()
    yield srv
    srv.stop()


def test_one_key_written_many_ways_is_one_small_credential_cache_entry(
    cached: ServerThread, admin: Actor
) -> None:
    """`Bearer`, `bearer` and `BEARER`, one space or thousands before the token: authentication reads them all
    as the same key. The cache kept one entry per header as sent (each as long as the header: hundreds of KB are
    accepted), so one key holder could fill its 10,000 entries with gigabytes in every server process."""
    cache = cached.app.state.services.credentials
    with httpx.Client(base_url=cached.url, timeout=30) as http:
        for n in range(12):
            scheme = ("Bearer", "bearer", "BEARER")[n % 3]
            header = scheme + " " * (1 + n * 20_000) + admin.api_key
            response = http.post("/graphql", json={"query": VIEWER}, headers={"Authorization": header})
            assert response.status_code == 200, response.text[:300]
            assert response.json()["data"] == {"viewer": {"id": admin.user_id}}
    assert len(cache) == 1
    held = list(cache._entries)
    assert all(len(key) == 32 for key in held)  # a digest: neither the header's length nor the secret itself
    assert admin.api_key.encode() not in b"".join(held)
