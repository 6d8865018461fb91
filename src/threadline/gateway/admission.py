"""Who may start a completion now: two caps, each a 429 rate_limit_exceeded with Retry-After past it.

- THREADLINE_RUN_MAX_EXECUTING_PER_TENANT (`Places`), in PostgreSQL across every process: a tenant's model work
  executing at once is its runs IN_PROGRESS or CANCELLING plus its gateway calls in progress, one number with one
  cap. A run over it waits in the queue (a worker claims it when a place frees); a gateway call cannot wait (its
  client holds a connection open for the answer), so it is refused. Queued runs, and runs waiting for tool outputs,
  hold no model and count toward neither. A call holds its place as a lease (`gateway_call`): renewed every
  THREADLINE_RUN_HEARTBEAT_SECONDS by one statement per process, given back when the call ends whichever way
  (answered, failed, its client gone, its key revoked), and lapsing THREADLINE_RUN_STALE_SECONDS after its process
  died, as the run of a dead worker is recovered after as long. Without it, calls through /v1 were not counted at
  all: one tenant could hold the models' capacity beyond the cap its runs obey, and starve the other tenants'.
- THREADLINE_RUN_MAX_ACTIVE_PER_USER (`Admission`), per user and process: a gateway call is a run that streams to
  its caller (bounded by THREADLINE_RUN_TIMEOUT_SECONDS as one is), but it never enters the runs table, so the cap
  on a user's active runs did not count it: one key could hold hundreds of model streams open at once (the `runs`
  budget bounds how many start per window, not how many run), each holding an upstream connection and, with a
  session, writing its reply every THREADLINE_RUN_DELTA_INTERVAL_SECONDS. Counted per process, as the HTTP
  subscription streams one user may hold are (THREADLINE_WS_MAX_OPERATIONS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, Callable, Coroutine
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from threadline.auth.principal import Principal
from threadline.errors import ErrorCode, ThreadlineError, bad_input
from threadline.gateway import repository as repo
from threadline.runs.worker import tenant_cap

log = logging.getLogger(__name__)

Release = Callable[[], None]
Spawn = Callable[[Coroutine[Any, Any, None]], object]


def both(first: Release, second: Release) -> Release:
    def release() -> None:
        try:
            first()
        finally:
            second()

    return release


class Admission:
    """The calls in flight per user in this process (an entry only while a call is)."""

    def __init__(self) -> None:
        self._active: dict[tuple[uuid.UUID, uuid.UUID], int] = {}

    def admit(self, principal: Principal, limit: int) -> Release:
        """A place for one more call of the user (RATE_LIMITED past `limit`; 0: no cap), and how to give it back
        (once; later calls do nothing)."""
        key = (principal.tenant_id, principal.user_id)
        active = self._active.get(key, 0)
        if limit > 0 and active >= limit:
            raise ThreadlineError(
                ErrorCode.RATE_LIMITED,
                f"You have {active} completions in progress; the limit is {limit} "
                "(THREADLINE_RUN_MAX_ACTIVE_PER_USER). Retry when one ends.",
                retryAfter=1,
                limit=limit,
            )
        self._active[key] = active + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._active.get(key, 0) - 1
            if left > 0:
                self._active[key] = left
            else:
                self._active.pop(key, None)

        return release


class Places:
    """The places this process's gateway calls hold among their tenants' model work executing
    (THREADLINE_RUN_MAX_EXECUTING_PER_TENANT), as leases in PostgreSQL (module docstring)."""

    def __init__(self, services: Any, spawn: Spawn) -> None:
        self.services = services
        # Runs a give-back to its end, even when the request that held the place is cancelled.
        self.spawn = spawn
        # place (one choice of a call) -> tenant, while its lease is renewed
        self._held: dict[uuid.UUID, uuid.UUID] = {}
        self._renewing: asyncio.Task[None] | None = None

    async def take(self, principal: Principal, choices: int = 1) -> Release:
        """A place for each of the `choices` (`n`) of one more call of the principal's tenant: each is a completion
        the model works on at once, as a run is (and each draws a `runs` token). RATE_LIMITED when the tenant's runs
        executing and calls in progress would be more than the cap with them; BAD_USER_INPUT (param `n`) when
        `choices` alone is (no retry could be admitted); no cap: nothing is taken. Returns how to give them back
        (once)."""
        settings = self.services.settings
        cap = tenant_cap(settings)
        if cap is None:
            return lambda: None
        if choices > cap:
            raise bad_input(
                f"`n` ({choices}) is more than the completions your organisation may have executing at once, "
                f"THREADLINE_RUN_MAX_EXECUTING_PER_TENANT ({cap}): each choice is a completion of its own",
                param="n",
                limit=cap,
            )
        tenant, calls = principal.tenant_id, [uuid.uuid4() for _ in range(choices)]
        async with self.services.db.transaction() as tx:
            held = await repo.take_call_place(tx, tenant, calls, cap, settings.run_stale_seconds)
        if held is not None:
            raise ThreadlineError(
                ErrorCode.RATE_LIMITED,
                f"Your organisation has {held} model calls executing, the limit of "
                f"THREADLINE_RUN_MAX_EXECUTING_PER_TENANT ({cap}): its runs in progress and its /v1 completions in "
                "progress count together, across every server (queued runs do not; a call asking for `n` choices "
                f"counts as n, {choices} here). Retry when one ends.",
                retryAfter=1,
                limit=cap,
            )
        for call in calls:
            self._held[call] = tenant
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew(), name="threadline-gateway-leases")
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            for call in calls:
                self._held.pop(call, None)  # no longer renewed: it lapses even if the give-back fails
            self.spawn(self._give_back(tenant, calls))

        return release

    async def _give_back(self, tenant: uuid.UUID, calls: list[uuid.UUID]) -> None:
        try:
            await repo.give_call_place(self.services.db, tenant, calls, self.services.settings.run_queue)
        except Exception as exc:  # noqa: BLE001 - its lease lapses instead (THREADLINE_RUN_STALE_SECONDS)
            log.warning("gateway: a call's place could not be given back (%s); its lease lapses", exc)

    async def _renew(self) -> None:
        settings = self.services.settings
        while self._held:
            await asyncio.sleep(settings.run_heartbeat_seconds)
            calls = [(tenant, call) for call, tenant in self._held.items()]
            if not calls:
                return
            try:
                await repo.renew_call_places(self.services.db, calls, settings.run_stale_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. the database restarting: renewed at the next beat
                log.warning("gateway: the leases of calls in progress could not be renewed (%s)", exc)

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewing


class ReleasingStream(StreamingResponse):
    """A streamed answer that gives its call's place back once it is sent or its client is gone (also when the
    body never started: a generator's own `finally` would not run then)."""

    def __init__(self, content: AsyncIterable[Any], release: Release, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
