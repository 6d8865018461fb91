"""Who may start a completion now: two caps, each a 429 rate_limit_exceeded with Retry-After past it, both counted
in PostgreSQL across every process from the same lease rows (`Places`).

- THREADLINE_RUN_MAX_ACTIVE_PER_USER: a user's active runs plus their gateway calls in progress (one per call,
  whatever its `n`). A gateway call is a run that streams to its caller (bounded by THREADLINE_RUN_TIMEOUT_SECONDS
  as one is), but it never enters the runs table: without it one key could hold hundreds of model streams open at
  once (the `runs` budget bounds how many start per window, not how many run), each holding an upstream connection
  and, with a session, writing its reply every THREADLINE_RUN_DELTA_INTERVAL_SECONDS. It was counted per process,
  and runCreate did not count the calls: a user held the cap in every server, and the cap again in runs.
- THREADLINE_RUN_MAX_EXECUTING_PER_TENANT: a tenant's model work executing at once is its runs IN_PROGRESS or
  CANCELLING plus its gateway calls in progress (one per choice `n`), one number with one cap. A run over it waits
  in the queue (a worker claims it when a place frees); a gateway call cannot wait (its client holds a connection
  open for the answer), so it is refused. Queued runs, and runs waiting for tool outputs, hold no model and count
  toward neither. Without it, calls through /v1 were not counted at all: one tenant could hold the models' capacity
  beyond the cap its runs obey, and starve the other tenants'.

A call holds its places as leases (`gateway_call`, one row per choice, the first naming its user): renewed every
THREADLINE_RUN_HEARTBEAT_SECONDS by one statement per process (a HOT update: no index holds `expires_at`), given
back when the call ends whichever way (answered, failed, its client gone, its key revoked), and lapsing
THREADLINE_RUN_STALE_SECONDS after its process died, as the run of a dead worker is recovered after as long.
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


def once(release: Release) -> Release:
    """`release` for the first call only; later calls do nothing."""
    released = False

    def first() -> None:
        nonlocal released
        if not released:
            released = True
            release()

    return first


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
        # places of calls that ended, while their give-back runs: not counted by this process's next take
        self._ending: set[uuid.UUID] = set()

    def check(self, choices: int) -> None:
        """BAD_USER_INPUT (param `n`) when `choices` alone are more than the tenant's cap: no retry could be
        admitted."""
        cap = tenant_cap(self.services.settings)
        if cap is not None and choices > cap:
            raise bad_input(
                f"`n` ({choices}) is more than the completions your organisation may have executing at once, "
                f"THREADLINE_RUN_MAX_EXECUTING_PER_TENANT ({cap}): each choice is a completion of its own",
                param="n",
                limit=cap,
            )

    async def take(self, principal: Principal, choices: int = 1) -> Release:
        """A place for each of the `choices` (`n`) of one more call of the principal: each is a completion the model
        works on at once, as a run is (and each draws a `runs` token); the call counts once toward its user's cap.
        RATE_LIMITED when the user's active runs and calls in progress are their cap already, or the tenant's runs
        executing and calls in progress would be more than its cap with these; BAD_USER_INPUT (param `n`) when
        `choices` alone is (no retry could be admitted); no cap: nothing is taken. Returns how to give them back
        (once)."""
        settings = self.services.settings
        cap = tenant_cap(settings)
        user_cap = settings.run_max_active_per_user if settings.run_max_active_per_user > 0 else None
        if cap is None and user_cap is None:
            return lambda: None
        self.check(choices)
        tenant, calls = principal.tenant_id, [uuid.uuid4() for _ in range(choices)]
        async with self.services.db.transaction() as tx:
            refused = await repo.take_call_place(
                tx, principal, calls, cap, user_cap, settings.run_stale_seconds, list(self._ending)
            )
        if refused is not None:
            raise _refusal(refused, choices, cap, user_cap)
        for call in calls:
            self._held[call] = tenant
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew(), name="threadline-gateway-leases")

        def release() -> None:
            for call in calls:
                self._held.pop(call, None)  # no longer renewed: it lapses even if the give-back fails
                self._ending.add(call)
            self.spawn(self._give_back(tenant, calls))

        return once(release)

    async def _give_back(self, tenant: uuid.UUID, calls: list[uuid.UUID]) -> None:
        try:
            await repo.give_call_place(self.services.db, tenant, calls, self.services.settings.run_queue)
        except Exception as exc:  # noqa: BLE001 - its lease lapses instead (THREADLINE_RUN_STALE_SECONDS)
            log.warning("gateway: a call's place could not be given back (%s); its lease lapses", exc)
        finally:
            self._ending.difference_update(calls)

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


def _refusal(
    refused: tuple[str, int], choices: int, cap: int | None, user_cap: int | None
) -> ThreadlineError:
    which, held = refused
    if which == "user":
        return ThreadlineError(
            ErrorCode.RATE_LIMITED,
            f"You have {held} completions in progress and active runs; the limit is {user_cap} "
            "(THREADLINE_RUN_MAX_ACTIVE_PER_USER), across every server. Retry when one ends.",
            retryAfter=1,
            limit=user_cap,
        )
    return ThreadlineError(
        ErrorCode.RATE_LIMITED,
        f"Your organisation has {held} model calls executing, the limit of "
        f"THREADLINE_RUN_MAX_EXECUTING_PER_TENANT ({cap}): its runs in progress and its /v1 completions in "
        "progress count together, across every server (queued runs do not; a call asking for `n` choices "
        f"counts as n, {choices} here). Retry when one ends.",
        retryAfter=1,
        limit=cap,
    )


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
