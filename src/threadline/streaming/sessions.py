"""Open WebSockets by user, so that credentials are live (ARCHITECTURE.md, Trust).

A socket authenticates once, in `connection_init`, and may stay open for days. When a user's key is revoked,
the user is erased or their role changes, the writer publishes `principal.changed` (auth.live); every
process's hub reads it from the log and hands it here. Each open socket of that user authenticates again from the
database: one whose credential no longer holds is closed with 4403 (its operations end, no event follows). The
user's subscriptions in this process are checked again under the stored role: a conversation stream the user
may no longer read ends, as after being removed from the conversation.

Queries and mutations on a socket also authenticate again at the start of each operation (view.py), so they
never run under a principal cached at connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from threadline.auth import repository as users
from threadline.auth.credentials import CredentialCache
from threadline.auth.principal import Principal, Role
from threadline.conversations.access import Access, require
from threadline.db import Database
from threadline.errors import ErrorCode, ThreadlineError
from threadline.events.log import LoggedEvent
from threadline.streaming.subscriber import Subscriber, subject_of

log = logging.getLogger(__name__)

REVOKED_CLOSE_CODE = 4403  # as for a connection_init with bad credentials
RETRY_CLOSE_CODE = 1013  # try again later: the credential could not be checked (database down)


# The hub's subscriptions of a tenant's user (all of the tenant's for None).
FindSubscriptions = Callable[[uuid.UUID, "uuid.UUID | None"], list[Subscriber]]


class SocketSession:
    """One authenticated WebSocket: its GraphQL context (which caches the principal) and the socket."""

    __slots__ = ("closed", "context", "tenant_id", "user_id", "websocket")  # one per idle socket

    def __init__(self, context: Any, websocket: Any, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self.context = context
        self.websocket = websocket
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.closed = False

    async def recheck(self) -> bool:
        """Authenticates the socket's credential again; closes the socket (False) when it no longer holds."""
        self.context.forget_principal()
        try:
            await self.context.principal()
        except ThreadlineError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED:
                await self.close(REVOKED_CLOSE_CODE, "credentials revoked")
            else:
                await self.close(RETRY_CLOSE_CODE, "credentials could not be checked; reconnect")
            return False
        except Exception:  # noqa: BLE001 - e.g. the database is restarting: do not keep an unchecked socket
            log.exception("re-checking a socket's credentials failed; closing it")
            await self.close(RETRY_CLOSE_CODE, "credentials could not be checked; reconnect")
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # the socket may be closing already
            await self.websocket.close(code=code, reason=reason)


class SocketSessions:
    """The process's open sockets by user (owned by the StreamHub, which routes `principal.changed` here)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_user: dict[uuid.UUID, set[SocketSession]] = defaultdict(set)
        self._tasks: set[asyncio.Task[None]] = set()
        # The app's credential cache (auth.credentials), emptied by every principal.changed before sockets re-check.
        self.credentials: CredentialCache | None = None

    def add(self, session: SocketSession) -> None:
        self._by_user[session.user_id].add(session)

    def remove(self, session: SocketSession) -> None:
        sessions = self._by_user.get(session.user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[session.user_id]

    def of_user(self, user_id: uuid.UUID) -> list[SocketSession]:
        """The user's open sessions in this process (sockets and HTTP subscription streams)."""
        return list(self._by_user.get(user_id, ()))

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    def principal_changed(self, event: LoggedEvent, find: FindSubscriptions) -> None:
        """Called by the hub's reader (no await there); `find(tenant, user)` lists the hub's subscriptions of
        the event's user (of its tenant when the event names none: an erasure). The checks run in a task of their
        own, and look the subscriptions up again after the sockets are checked, so that one which registered
        meanwhile (its operation authenticated just before the change) is checked too."""
        if self.credentials is not None:
            self.credentials.forget()
        tenant = event.tenant_id
        user = subject_of(event)
        if user is not None:
            sessions = [s for s in self._by_user.get(user, ()) if s.tenant_id == tenant]
        else:
            sessions = [s for group in self._by_user.values() for s in group if s.tenant_id == tenant]
        if not sessions and not find(tenant, user):
            return
        if user is not None:
            work = self._recheck(tenant, user, sessions, find)
        else:
            work = self._sweep(tenant, sessions, find)
        task = asyncio.create_task(work, name="threadline-credentials-recheck")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(
        self, tenant_id: uuid.UUID, sessions: list[SocketSession], find: FindSubscriptions
    ) -> None:
        """After an erasure (the log names nobody): one query finds which of the tenant's users with sockets
        or subscriptions here are gone; their sockets close and their subscriptions end."""
        subscribers = find(tenant_id, None)
        try:
            ids = list({s.user_id for s in sessions} | {s.user_id for s in subscribers})
            present = {r["id"] for r in await users.users_by_ids(self.db, tenant_id, ids)}
        except Exception:  # noqa: BLE001 - unchecked is not an option: every socket checks itself instead
            log.exception("finding erased users failed; re-checking every socket of the tenant")
            present = set()
        await asyncio.gather(*(s.recheck() for s in sessions if s.user_id not in present))
        for sub in find(tenant_id, None):
            if sub.user_id not in present:
                sub.end("user erased")

    async def _recheck(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, sessions: list[SocketSession], find: FindSubscriptions
    ) -> None:
        await asyncio.gather(*(s.recheck() for s in sessions))
        subscribers = [s for s in find(tenant_id, user_id) if not s.ended]
        if not subscribers:
            return
        try:
            row = await users.user_by_id(self.db, tenant_id, user_id)
            if row is None:  # erased: nothing of theirs streams on (their sockets are closed above)
                for sub in subscribers:
                    sub.end("user erased")
                return
            principal = Principal(tenant_id, user_id, Role(row["role"]), row["team"])
            for sub in subscribers:
                if sub.follows_viewer or sub.ended:
                    continue  # viewerEvents follows memberships, whatever the role
                try:
                    await require(self.db, principal, next(iter(sub.conversations)), Access.READ)
                except ThreadlineError:
                    sub.end("access lost")
        except Exception:  # noqa: BLE001 - a database error must not leave streams running unchecked
            log.exception("re-checking subscriptions after a credential change failed; ending them")
            for sub in subscribers:
                sub.end("credentials could not be checked")
