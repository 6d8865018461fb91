"""The per-request context and the typed `Info` alias resolvers use."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import strawberry
from strawberry.dataloader import DataLoader

from threadline.auth.principal import Principal
from threadline.auth.service import authenticate
from threadline.db import Database
from threadline.errors import ErrorCode, ThreadlineError
from threadline.privacy import reading
from threadline.settings import Settings


@dataclass
class Context:
    db: Database
    settings: Settings
    authorization: str | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    services: Any = None  # the app's long-lived services (stream hub, ...), set by the view
    request: Any = None
    response: Any = None
    connection_params: Any = None  # graphql-transport-ws connection_init payload
    sql_statements: list[int] | None = None  # this request's statement count, when exposed
    _principal: Principal | None = None
    _auth_error: ThreadlineError | None = None
    _loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)
    # Per-request caches keyed by domain (e.g. thread loads), so nested fields reuse one load.
    cache: dict[Any, Any] = field(default_factory=dict)
    # Whether the caller reads others' content masked (privacy.reading: MASK_ON_READ), once authenticated.
    read_scope: reading.ReadScope = field(default_factory=reading.ReadScope)

    def __post_init__(self) -> None:
        # Made in the request's (or the socket's) task, before any resolver runs: they all see this scope.
        reading.bind(self.read_scope)

    async def principal(self) -> Principal:
        """The authenticated caller; raises UNAUTHENTICATED (once per request, then cached)."""
        if self._principal is not None:
            return self._principal
        if self._auth_error is not None:
            raise self._auth_error
        try:
            credentials = getattr(self.services, "credentials", None)
            if credentials is not None and self.authorization:
                # Cached in the process (auth.credentials: emptied on every principal.changed, everywhere).
                self._principal = await credentials.principal(self.authorization, self._authenticate)
            else:
                self._principal = await self._authenticate()
        except ThreadlineError as exc:
            self._auth_error = exc
            raise
        reading.settle(self.read_scope, self._principal)
        return self._principal

    @property
    def known_principal(self) -> Principal | None:
        """The authenticated caller once `principal()` found them, else None (it does not authenticate)."""
        return self._principal

    async def _authenticate(self) -> Principal:
        return await authenticate(self.db, self.settings, self.authorization)

    def forget_principal(self) -> None:
        """On a long-lived socket: the next principal() authenticates again, so a revoked key, an erased user
        or a changed role counts from the next operation on (ARCHITECTURE.md: credentials are live). A refusal
        (UNAUTHENTICATED) stays: a credential once found revoked never works again on this socket."""
        self._principal = None
        if self._auth_error is not None and self._auth_error.code is not ErrorCode.UNAUTHENTICATED:
            self._auth_error = None

    def loader(self, name: str, factory: Any) -> DataLoader[Any, Any]:
        """A DataLoader created once per operation (never shared across WebSocket operations or events)."""
        existing = self._loaders.get(name)
        if existing is None:
            existing = factory()
            self._loaders[name] = existing
        return existing

    def loaded(self, name: str) -> DataLoader[Any, Any] | None:
        """The loader `name` if this operation created it (graphql.ready reads what it already holds)."""
        return self._loaders.get(name)

    def forget_loaders(self) -> None:
        """On a long-lived socket, before each operation or event: loaders and caches start empty, so nothing
        one operation loaded is served to the next (the socket's context outlives them all)."""
        self.cache.clear()
        self._loaders.clear()


Info: TypeAlias = strawberry.Info[Context, None]
