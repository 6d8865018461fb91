"""Completions one user may have in flight in a process: at most THREADLINE_RUN_MAX_ACTIVE_PER_USER, as for runs.

A gateway call is a run that streams to its caller (bounded by THREADLINE_RUN_TIMEOUT_SECONDS as one is), but it
never enters the runs table, so the cap on a user's active runs did not count it: one key could hold hundreds of
model streams open at once (the `runs` budget bounds how many start per window, not how many run), each holding
an upstream connection and, with a session, writing its reply every THREADLINE_RUN_DELTA_INTERVAL_SECONDS.
Counted per process, as the HTTP subscription streams one user may hold are (THREADLINE_WS_MAX_OPERATIONS).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from threadline.auth.principal import Principal
from threadline.errors import ErrorCode, ThreadlineError

Release = Callable[[], None]


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
