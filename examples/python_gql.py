"""Threadline with the Python `gql` 4 client: HTTP for queries and mutations, WebSocket for subscriptions.

    pip install "gql[httpx,websockets]>=4,<5"
    THREADLINE_URL=http://127.0.0.1:8000/graphql THREADLINE_API_KEY=tl_... python examples/python_gql.py

Creates a conversation, starts a thread, follows `conversationEvents` from `streamCursor`, replies, receives
the reply's event, then replies again and resumes with `since` set to the last event's cursor: the resumed
stream starts exactly after it (no gap, no duplicate). Exits 0 on success.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from gql import Client, GraphQLRequest, gql
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

CREATE = gql("mutation($i: ConversationCreateInput!) { conversationCreate(input: $i) { id title } }")
START = gql("mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }")
REPLY = gql("mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }")
STREAM_CURSOR = gql("query { streamCursor }")
EVENTS = gql(
    """subscription($c: ID!, $since: String) {
      conversationEvents(conversationId: $c, since: $since) {
        __typename cursor type conversationId rootId
        ... on ThreadActivityEvent { action changedMessage { id content } }
      }
    }"""
)


def op(document: GraphQLRequest, **variables: Any) -> GraphQLRequest:
    """`document` with its variables (gql 4 takes them on the request)."""
    return GraphQLRequest(document, variable_values=variables)


def ws_url(http_url: str) -> str:
    """The WebSocket endpoint is the same path as HTTP (ws:// for http://, wss:// for https://)."""
    return "ws" + http_url.removeprefix("http")


async def next_reply(
    ws: WebsocketsTransport, conversation_id: str, since: str, message_id: str
) -> dict[str, Any]:
    """Follow the conversation from `since` until the event for `message_id` arrives; returns that event."""
    async with Client(transport=ws) as session:
        async for result in session.subscribe(op(EVENTS, c=conversation_id, since=since)):
            event: dict[str, Any] = result["conversationEvents"]
            if event["__typename"] == "ThreadActivityEvent" and event["changedMessage"]["id"] == message_id:
                return event
    raise RuntimeError("the stream ended before the reply's event")


async def main(url: str, api_key: str) -> None:
    auth = f"Bearer {api_key}"
    http = HTTPXAsyncTransport(url=url, headers={"Authorization": auth})

    def socket() -> WebsocketsTransport:
        # A transport serves one connection: make one per subscription. The key goes in connection_init.
        return WebsocketsTransport(
            url=ws_url(url), init_payload={"authorization": auth}, subprotocols=["graphql-transport-ws"]
        )

    # fetch_schema_from_transport: gql validates every document against the server's schema before sending.
    async with Client(transport=http, fetch_schema_from_transport=True) as session:
        conversation = (await session.execute(op(CREATE, i={"title": "gql example"})))["conversationCreate"]
        started = await session.execute(op(START, c=conversation["id"], i={"content": "hello"}))
        root = started["threadStart"]["id"]
        start = (await session.execute(STREAM_CURSOR))["streamCursor"]

        # Reply, then subscribe from `start`: `since` replays what happened before the subscription opened,
        # so the reply's event arrives whatever the timing.
        reply = await session.execute(op(REPLY, p=root, i={"content": "first reply"}))
        reply_id = reply["messageReply"]["id"]
        event = await asyncio.wait_for(next_reply(socket(), conversation["id"], start, reply_id), 30)
        print(f"received {event['type']} {event['action']} at {event['cursor']}")

        # Reconnect: resume after the last event seen, as a client does after a dropped connection.
        second_reply = await session.execute(op(REPLY, p=root, i={"content": "second reply"}))
        second = second_reply["messageReply"]["id"]
        resumed = await asyncio.wait_for(
            next_reply(socket(), conversation["id"], event["cursor"], second), 30
        )
        print(f"resumed with since={event['cursor']}: {resumed['type']} {resumed['action']}")


if __name__ == "__main__":
    url = os.environ.get("THREADLINE_URL", "http://127.0.0.1:8000/graphql")
    key = os.environ.get("THREADLINE_API_KEY")
    if not key:
        sys.exit("set THREADLINE_API_KEY")
    asyncio.run(main(url, key))
    print("ok")
