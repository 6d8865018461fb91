"""A small graphql-transport-ws client for tests (real WebSocket, real server)."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.sync.client import ClientConnection, connect

PROTOCOL = "graphql-transport-ws"


class WsClient:
    def __init__(self, url: str, token: str | None, *, init: bool = True) -> None:
        self.ws: ClientConnection = connect(url, subprotocols=[PROTOCOL], open_timeout=10, max_size=8 * 1024 * 1024)
        self.pending: list[dict[str, Any]] = []
        if init:
            payload = {"authorization": f"Bearer {token}"} if token else {}
            self.send({"type": "connection_init", "payload": payload})
            ack = self.receive(timeout=10)
            assert ack["type"] == "connection_ack", ack

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next protocol message other than ping/pong (pings are answered)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message in time")
            message: dict[str, Any] = json.loads(self.ws.recv(timeout=remaining))
            if message["type"] == "ping":
                self.send({"type": "pong"})
                continue
            if message["type"] == "pong":
                continue
            return message

    def subscribe(self, query: str, variables: dict[str, Any] | None = None, op_id: str = "1") -> str:
        self.send({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})
        return op_id

    def next_event(self, op_id: str = "1", timeout: float = 10.0) -> dict[str, Any]:
        """The `data` of the next `next` message for `op_id` (fails on errors or completion)."""
        while True:
            message = self.receive(timeout)
            if message.get("id") != op_id:
                self.pending.append(message)
                continue
            assert message["type"] == "next", message
            assert not message["payload"].get("errors"), message
            data: dict[str, Any] = message["payload"]["data"]
            return data

    def events(
        self, count: int, op_id: str = "1", timeout: float = 10.0, ignore: tuple[str, ...] = ("presence.update",)
    ) -> list[dict[str, Any]]:
        """The next `count` events of `op_id`, skipping types in `ignore` (presence by default)."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            event = next(iter(self.next_event(op_id, timeout).values()))
            if event["type"] not in ignore:
                out.append(event)
        return out

    def expect_quiet(self, seconds: float = 0.5, ignore: tuple[str, ...] = ("presence.update",)) -> None:
        """Nothing but keep-alives (and ignored event types) arrives for `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                message = self.receive(timeout=remaining)
            except TimeoutError:
                return
            payload = message.get("payload") or {}
            data = payload.get("data") if isinstance(payload, dict) else None
            if data and next(iter(data.values()))["type"] in ignore:
                continue
            raise AssertionError(f"unexpected message {message}")

    def close(self) -> None:
        self.ws.close()


EVENT_FIELDS = """
  cursor type conversationId rootId occurredAt
  ... on ThreadNewEvent { thread { id replyCount unreadCount root { id content author { id } } } }
  ... on ThreadActivityEvent { replyCount action changedMessage { id content parentId isDeleted path } }
  ... on MessageDeltaEvent { messageId runId index delta }
  ... on MessageDoneEvent { messageId runId usage { promptTokens completionTokens totalTokens } }
  ... on PresenceUpdateEvent { userId status }
  ... on TypingUpdateEvent { userId isTyping }
  ... on UnreadUpdateEvent { unreadCount }
  ... on MembershipChangedEvent { userId change role }
  ... on StreamErrorEvent { code message }
"""

CONVERSATION_EVENTS = (
    "subscription($c: ID!, $r: ID, $s: String) { conversationEvents(conversationId: $c, rootId: $r, since: $s) {"
    + EVENT_FIELDS
    + "} }"
)
VIEWER_EVENTS = "subscription($s: String) { viewerEvents(since: $s) {" + EVENT_FIELDS + "} }"
