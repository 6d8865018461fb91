"""Open WebSockets by user, so that credentials are live (ARCHITECTURE.md, Trust).

A socket authenticates once, in `connection_init`, and may stay open for days. When a user's key is revoked,
the user is erased or their role changes, the writer publishes `principal.changed` (auth.live); every
process's hub reads it from the log and hands it here. Each open socket of that user authenticates again from the
database: one whose credential no longer holds is closed with 4403 (its operations end, no event follows). The
user's subscriptions in this process are checked again under the stored role: a conversation stream the user
may no longer read ends, as after being removed from the conversation.

A client may have stopped reading: its socket's close frame then waits behind a buffer that never drains. So a
revoked socket's subscriptions end at once and nothing more is written to it whatever its buffer holds, its
connection is cut if the close is not answered within CLOSE_GRACE_SECONDS (streaming.transport.close_at_once),
and nothing else (the checks of the user's other subscriptions, other sockets' closes) waits for its close.

Queries and mutations on a socket also authenticate again at the start of each operation (view.py), so they
never run under a principal cached at connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from threadline.auth import repository as users
from threadline.auth.credentials import CredentialCache
from threadline.auth.principal import Principal, Role
from threadline.conversations.access import Access, require
from threadline.db import Database
from threadline.errors import ErrorCode, ThreadlineError
from threadline.events.log import LoggedEvent
from threadline.streaming.subscriber import Subscriber, subject_of
from threadline.streaming.transport import CLOSE_GRACE_SECONDS, close_at_once

log = logging.getLogger(__name__)

REVOKED_CLOSE_CODE = 4403  # as for a connection_init with bad credentials
RETRY_CLOSE_CODE = 1013  # try again later: the credential could not be checked (database down)
Refusal = tuple[int, str]  # a socket's close code and reason


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

    async def refusal(self) -> Refusal | None:
        """Authenticates the socket's credential again: None while it holds, else how to close the socket."""
        self.context.forget_principal()
        try:
            await self.context.principal()
        except ThreadlineError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED:
                return REVOKED_CLOSE_CODE, "credentials revoked"
            return RETRY_CLOSE_CODE, "credentials could not be checked; reconnect"
        except Exception:  # noqa: BLE001 - e.g. the database is restarting: do not keep an unchecked socket
            log.exception("re-checking a socket's credentials failed; closing it")
            return RETRY_CLOSE_CODE, "credentials could not be checked; reconnect"
        return None

    async def recheck(self) -> bool:
        """Authenticates the socket's credential again; closes the socket (False) when it no longer holds."""
        refusal = await self.refusal()
        if refusal is None:
            return True
        rest = self.shut(*refusal)
        if rest is not None:
            await rest
        return False

    def shut(
        self, code: int, reason: str, subscriptions: Iterable[Subscriber] = ()
    ) -> Coroutine[Any, Any, None] | None:
        """Closes the socket now and ends `subscriptions` (its own): nothing more is delivered on it, however
        full its buffer (streaming.transport.close_at_once; cut off after CLOSE_GRACE_SECONDS if its client does
        not answer). Where the server allows no such close (another server; an HTTP stream), what is left to
        await: the stock close, CLOSE_GRACE_SECONDS at most."""
        if self.closed:
            return None
        self.closed = True
        if not close_at_once(self.websocket, code, reason, CLOSE_GRACE_SECONDS):
            return self._close(code, reason, list(subscriptions))
        for sub in subscriptions:
            sub.end(reason)
        return None

    async def _close(self, code: int, reason: str, subscriptions: list[Subscriber]) -> None:
        # The socket may be closing already, or not drain in time (then it stays as the server leaves it).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.websocket.close(code=code, reason=reason), CLOSE_GRACE_SECONDS)
        # After the close (which refuses later writes): an HTTP stream ends with its error, not as if complete.
        for sub in subscriptions:
            sub.end(reason)


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
        meanwhile (its operation authenticated just before the change) is checked too. They never wait for a
        socket's close (`_shut`)."""
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
        self._spawn(work, "threadline-credentials-recheck")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shut(self, session: SocketSession, refusal: Refusal, subscriptions: list[Subscriber]) -> None:
        """Closes a socket whose credential no longer holds, ending its subscriptions at once. Nothing waits for
        its close (its client may not read): a stock close that must be awaited runs in a task of its own."""
        own = [sub for sub in subscriptions if sub.context is session.context]
        rest = session.shut(*refusal, own)
        if rest is not None:
            self._spawn(rest, "threadline-credentials-close")

    async def _refuse(self, sessions: list[SocketSession], find: Callable[[], list[Subscriber]]) -> set[int]:
        """Authenticates each session again and closes those whose credential no longer holds: the ids of their
        contexts (their subscriptions end with them, after the close where it must be awaited: an HTTP stream
        ends with its error, not as if complete)."""
        sessions = [s for s in sessions if not s.closed]
        refusals = await asyncio.gather(*(s.refusal() for s in sessions))
        shut: set[int] = set()
        if not any(refusals):
            return shut
        subscriptions = find()
        for session, refusal in zip(sessions, refusals, strict=True):
            if refusal is not None:
                self._shut(session, refusal, subscriptions)
                shut.add(id(session.context))
        return shut

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
        gone = [s for s in sessions if s.user_id not in present]
        shut = await self._refuse(gone, lambda: find(tenant_id, None))
        for sub in find(tenant_id, None):
            if sub.user_id not in present and id(sub.context) not in shut:
                sub.end("user erased")

    async def _recheck(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, sessions: list[SocketSession], find: FindSubscriptions
    ) -> None:
        shut = await self._refuse(sessions, lambda: find(tenant_id, user_id))
        subscribers = [s for s in find(tenant_id, user_id) if not s.ended and id(s.context) not in shut]
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
