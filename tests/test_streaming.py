"""Live events over graphql-transport-ws against the real server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from tests.harness import Actor, Client, ServerThread, test_settings
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient, position

CREATE = "mutation($t: String) { conversationCreate(input: {title: $t}) { id } }"
START = "mutation($c: ID!, $x: String!) { threadStart(conversationId: $c, input: {content: $x}) { id } }"
REPLY = "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }"


def live(actor: Actor) -> str:
    """The current stream cursor: subscribing with it as `since` misses nothing written afterwards."""
    return str(actor.client.ok("{ streamCursor }")["streamCursor"])


def conversation(actor: Actor) -> str:
    return str(actor.client.ok(CREATE, {"t": "stream"})["conversationCreate"]["id"])


def join(owner: Actor, member: Actor, cid: str, role: str = "MEMBER") -> None:
    invite = owner.client.ok(
        "mutation($c: ID!, $u: ID!, $r: ParticipantRole) { participantInvite(conversationId: $c, userId: $u, role: $r) { id } }",
        {"c": cid, "u": member.user_id, "r": role},
    )["participantInvite"]["id"]
    member.client.ok("mutation($i: ID!) { inviteAccept(id: $i) { id } }", {"i": invite})


@pytest.fixture(scope="module")
def quick_typing(dsn: str) -> Iterator[ServerThread]:
    """A second in-process server whose typing indicators expire after half a second, sharing the database."""
    srv = ServerThread(
        test_settings(
            dsn, migrate_on_start=False, typing_timeout_seconds=0.5, maintenance_interval_seconds=0.2
        )
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def ws(server: ServerThread) -> Callable[..., WsClient]:
    opened: list[WsClient] = []

    def open_(actor: Actor | None = None, token: str | None = None, init: bool = True) -> WsClient:
        client = WsClient(
            server.ws_url, token if token is not None else (actor.api_key if actor else None), init=init
        )
        opened.append(client)
        return client

    yield open_  # type: ignore[misc]
    for c in opened:
        try:
            c.close()
        except Exception:
            pass


def test_thread_new_and_activity_arrive_in_order(
    admin: Actor, ws: Callable[..., WsClient], server: ServerThread
) -> None:
    cid = conversation(admin)
    client = ws(admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    root = admin.client.ok(START, {"c": cid, "x": "hello"})["threadStart"]["id"]
    reply = admin.client.ok(REPLY, {"p": root, "x": "world"})["messageReply"]["id"]
    events = client.events(2)
    assert [e["type"] for e in events] == ["thread.new", "thread.activity"]
    assert events[0]["thread"]["root"] == {"id": root, "content": "hello", "author": {"id": admin.user_id}}
    assert events[0]["conversationId"] == cid and events[0]["rootId"] == root
    assert events[1]["changedMessage"] == {
        "id": reply,
        "content": "world",
        "parentId": root,
        "isDeleted": False,
        "path": [root, reply],
    }
    assert events[1]["replyCount"] == 1 and events[1]["action"] == "REPLY"
    assert position(server, admin.tenant_id, events[1]["cursor"]) > position(
        server, admin.tenant_id, events[0]["cursor"]
    )


def test_resume_with_since_replays_exactly_once_while_writes_continue(
    admin: Actor, ws: Callable[..., WsClient]
) -> None:
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "r"})["threadStart"]["id"]
    first = ws(admin)
    first.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    admin.client.ok(REPLY, {"p": root, "x": "0"})
    cursor = first.events(1, ignore=("presence.update", "thread.new"))[0]["cursor"]
    first.close()

    total = 60
    stop_after = total

    def writer() -> None:
        for i in range(1, stop_after):
            admin.client.ok(REPLY, {"p": root, "x": str(i)})

    thread = threading.Thread(target=writer)
    thread.start()
    second = ws(admin)
    second.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": cursor})
    seen: list[str] = []
    try:
        for _ in range(total - 1):
            seen.append(second.events(1)[0]["changedMessage"]["content"])
    except TimeoutError:
        raise AssertionError(f"stalled after {seen}") from None
    thread.join()
    assert seen == [str(i) for i in range(1, total)]
    second.expect_quiet(0.3)


def test_subscribing_to_another_tenants_conversation_is_not_found(
    admin: Actor, make_tenant: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    cid = conversation(admin)
    stranger = make_tenant()
    client = ws(stranger)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    message = client.receive()
    assert message["type"] in ("next", "error")
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"


def test_connection_without_or_with_bad_token_is_closed_4403(
    ws: Callable[..., WsClient], server: ServerThread
) -> None:
    from websockets.exceptions import ConnectionClosed

    for token in (None, "tlk_wrong"):
        client = WsClient(server.ws_url, None, init=False)
        client.send(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"} if token else {}}
        )
        with pytest.raises(ConnectionClosed) as closed:
            client.receive(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


def test_malformed_since_is_bad_user_input(admin: Actor, ws: Callable[..., WsClient]) -> None:
    cid = conversation(admin)
    client = ws(admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": "not-a-cursor"})
    message = client.receive()
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_unread_update_goes_only_to_the_user_it_counts_for(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    member_ws = ws(member)
    member_ws.subscribe(VIEWER_EVENTS, {"s": live(admin)})
    admin_ws = ws(admin)
    admin_ws.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    root = admin.client.ok(START, {"c": cid, "x": "ping"})["threadStart"]["id"]
    got = member_ws.events(2, ignore=("presence.update", "membership.changed"))
    assert [e["type"] for e in got] == ["thread.new", "unread.update"]
    assert got[1]["unreadCount"] == 1 and got[1]["rootId"] == root
    admin_got = admin_ws.events(1)
    assert admin_got[0]["type"] == "thread.new"
    admin_ws.expect_quiet(0.3)  # the admin wrote it: no unread.update for them


def test_removed_participant_stream_ends(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    client = ws(member)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    # The stream is open once an event arrives on it; a subscribe that reached the server only after the
    # removal would (rightly) be refused instead of ended.
    admin.client.ok(START, {"c": cid, "x": "before removal"})
    assert client.events(1, ignore=("presence.update", "unread.update"))[0]["type"] == "thread.new"
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }",
        {"c": cid, "u": member.user_id},
    )
    event = client.events(1, ignore=("presence.update", "unread.update"))[0]
    assert (event["type"], event["change"], event["userId"]) == (
        "membership.changed",
        "REMOVED",
        member.user_id,
    )
    assert client.receive()["type"] == "complete"
    admin.client.ok(START, {"c": cid, "x": "after removal"})
    client.expect_quiet(0.3)


def test_typing_starts_and_expires(
    admin: Actor, make_user: Callable[..., Actor], quick_typing: ServerThread
) -> None:
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    typist = Client(quick_typing.url, member.api_key)
    client = WsClient(quick_typing.ws_url, admin.api_key)
    try:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
        # Typing is live only (never replayed): the stream must be open before the member types.
        admin.client.ok(START, {"c": cid, "x": "open"})
        assert client.events(1)[0]["type"] == "thread.new"
        typist.ok("mutation($c: ID!) { typingSet(conversationId: $c, isTyping: true) }", {"c": cid})
        typist.ok(
            "mutation($c: ID!) { typingSet(conversationId: $c, isTyping: true) }", {"c": cid}
        )  # renewal: silent
        # Expired by the server's THREADLINE_TYPING_TIMEOUT_SECONDS (0.5 s here), not by the member.
        events = client.events(2, timeout=15)
        assert [(e["userId"], e["isTyping"]) for e in events] == [
            (member.user_id, True),
            (member.user_id, False),
        ]
    finally:
        client.close()
        typist.close()
