"""A WebSocket's credentials from its `connection_init` payload, and the close that refuses them.

Clients put the key in different places: graphql-ws users write `{authorization: "Bearer ..."}` or
`{Authorization: ...}`, Apollo's and urql's examples `{authToken: ...}`, others `{token: ...}`, and clients
that mimic HTTP nest it as `{headers: {Authorization: ...}}`. All of them are accepted, with or without the
"Bearer " scheme. A refusal closes the socket with 4403 and a reason naming the cause (the protocol lets a
close frame carry one; urql and graphql-ws show it, where "Forbidden" alone told the user nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from threadline.errors import ErrorCode, ThreadlineError

if TYPE_CHECKING:
    from threadline.settings import Settings
    from threadline.streaming.sessions import SocketSessions

REFUSED_CLOSE_CODE = 4403
# graphql-transport-ws's code for "too many initialisation requests": over the caller's budget or socket cap.
TOO_MANY_CLOSE_CODE = 4429
# RFC 6455: a close frame's payload is at most 125 bytes, two of which are the code.
CLOSE_REASON_MAX_BYTES = 123
# Looked up in this order; the first non-empty string wins.
CREDENTIAL_KEYS = ("authorization", "Authorization", "authToken", "token")
HEADER_KEYS = ("Authorization", "authorization")


def connection_authorization(params: object) -> str | None:
    """The `Authorization` value (`Bearer <key>`) a `connection_init` payload carries, or None."""
    if not isinstance(params, Mapping):
        return None
    candidates = [params.get(key) for key in CREDENTIAL_KEYS]
    headers = params.get("headers")
    if isinstance(headers, Mapping):
        candidates.extend(headers.get(key) for key in HEADER_KEYS)
    for value in candidates:
        if isinstance(value, str) and value.strip():
            token = value.strip()
            # A bare key or JWT has no scheme; one with a scheme ("Bearer x", "Basic x") is checked as sent.
            return token if " " in token else f"Bearer {token}"
    return None


class SocketRefused(Exception):
    """Raised by the view's `on_ws_connect`: the transport handler closes the socket with this code and
    reason (strawberry's own ConnectionRejectionError always closes with the bare reason "Forbidden")."""

    def __init__(self, cause: str, code: int = REFUSED_CLOSE_CODE) -> None:
        super().__init__(cause)
        self.code = code
        self.reason = close_reason(f"Forbidden: {cause}")


def close_reason(text: str) -> str:
    """`text` cut to what a close frame can carry, on a character boundary."""
    encoded = text.encode()
    if len(encoded) <= CLOSE_REASON_MAX_BYTES:
        return text
    return encoded[: CLOSE_REASON_MAX_BYTES - 3].decode(errors="ignore") + "..."


def check_open_sockets(sessions: SocketSessions, user_id: Any, settings: Settings) -> None:
    """RATE_LIMITED when the user already holds `ws_max_sockets_per_user` open WebSockets in this process
    (HTTP subscription streams are counted by their own cap, `ws_max_operations`)."""
    limit = settings.ws_max_sockets_per_user
    if limit <= 0:
        return
    from threadline.graphql.http_subscriptions import StreamEnd

    open_sockets = sum(1 for s in sessions.of_user(user_id) if not isinstance(s.websocket, StreamEnd))
    if open_sockets >= limit:
        raise ThreadlineError(
            ErrorCode.RATE_LIMITED,
            f"You have {open_sockets} open WebSockets here; the limit is {limit} "
            "(THREADLINE_WS_MAX_SOCKETS_PER_USER). Run several subscriptions over one socket.",
            retryAfter=1,
            limit=limit,
        )


class PendingSockets:
    """Sockets not authenticated yet, from the handshake until their `connection_init` is acknowledged (or they end),
    per counted address (ratelimits.addresses.counted: behind trusted proxies the client's, an IPv6 client by its
    /64) in this process. A socket waits for its `connection_init` up to THREADLINE_WS_INIT_TIMEOUT_SECONDS holding
    memory, and before this count one address could hold any number of them; an address holds at most
    THREADLINE_WS_MAX_SOCKETS_PER_USER (one user's cap once authenticated; 0: no cap), the next handshake is
    refused (HTTP 403)."""

    def __init__(self) -> None:
        self._by_address: dict[str, int] = {}

    def enter(self, address: str, limit: int) -> bool:
        held = self._by_address.get(address, 0)
        if 0 < limit <= held:
            return False
        self._by_address[address] = held + 1
        return True

    def leave(self, address: str) -> None:
        held = self._by_address.get(address, 0) - 1
        if held > 0:
            self._by_address[address] = held
        else:
            self._by_address.pop(address, None)

    def __len__(self) -> int:
        return sum(self._by_address.values())
