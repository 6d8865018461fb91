"""Credentials cached in the process, so that a request does not spend a database round trip on who its caller
is (issue 14: authentication was one of three fixed round trips per request).

Credentials are live (ARCHITECTURE.md, Trust), so an entry must never outlive a change to the credential:

- every `principal.changed` event (a revoked key, a changed role, an erased user) empties the cache of every
  process: the stream hub hands it here (streaming.sessions) before the sockets re-check;
- the process that made the change empties its own caches right after the commit (`forget_in_process`), so
  the very next request of that client is refused even if the hub's event is still on its way;
- an entry is trusted for at most THREADLINE_CREDENTIAL_CACHE_SECONDS (default 1 s): if the hub is held back
  (its LISTEN connection reconnecting, a slow writer ahead of the event), a change still takes effect within
  that bound everywhere;
- a load that began before an invalidation is not stored (a generation counter), so a read of the old state
  racing a revocation cannot put it back;
- refusals are never cached (an unknown key costs a lookup, as before), and a JWT's entry ends at its `exp`;
- an entry is keyed by a digest of the credential as authentication reads it (scheme case and the spaces
  around the token do not count), never by the header as sent: the ways of writing one valid key are
  countless and each may be as long as the server takes headers (hundreds of KB), so keying by the raw
  value let one key holder fill MAX_ENTRIES entries with gigabytes. The secret is not kept in memory either.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from threadline.auth.principal import Principal
from threadline.auth.tokens import token_expiry

MAX_ENTRIES = 10_000  # distinct credentials kept; the least recently used go first

_caches: weakref.WeakSet[CredentialCache] = weakref.WeakSet()


def cache_key(authorization: str) -> bytes:
    """What an entry is found by: a SHA-256 of the scheme (any case) and the token (as auth.service reads them)."""
    scheme, _, token = authorization.strip().partition(" ")
    return hashlib.sha256(f"{scheme.lower()} {token.strip()}".encode()).digest()


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    stored_at: float  # time.monotonic()
    expires_at: float | None  # a JWT's exp (epoch seconds)


class CredentialCache:
    """Principals by `Authorization` value, for one app (one per process under `serve`)."""

    def __init__(self, max_age_seconds: float, max_entries: int = MAX_ENTRIES) -> None:
        self.max_age_seconds = max_age_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._generation = 0
        self.hits = 0
        self.misses = 0
        _caches.add(self)

    async def principal(self, authorization: str, load: Callable[[], Awaitable[Principal]]) -> Principal:
        """The cached principal of `authorization`, or `load()`'s (stored unless invalidated meanwhile)."""
        if self.max_age_seconds <= 0:
            return await load()
        key = cache_key(authorization)
        entry = self._entries.get(key)
        if entry is not None:
            fresh = time.monotonic() - entry.stored_at < self.max_age_seconds
            if fresh and (entry.expires_at is None or time.time() < entry.expires_at):
                self.hits += 1
                # Tolerant of a forget() from another thread (test servers share a process): no KeyError.
                with contextlib.suppress(KeyError):
                    self._entries.move_to_end(key)
                return entry.principal
            self._entries.pop(key, None)
        self.misses += 1
        generation = self._generation
        principal = await load()
        if generation == self._generation:
            self._entries[key] = _Entry(principal, time.monotonic(), token_expiry(authorization))
            if len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return principal

    def forget(self) -> None:
        """Drops every entry, and any load in flight from being stored. A change is rare (a revocation, a role
        change, an erasure) and a refill costs one lookup per active credential: simpler and safer than
        finding the changed user's entries."""
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def forget_in_process() -> None:
    """After a credential change commits: every cache of this process forgets (see the module's docstring)."""
    for cache in list(_caches):
        cache.forget()
