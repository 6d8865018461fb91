"""The OpenAI-compatible gateway over HTTP: /v1/models, plain proxying, sessions (history prepended, both sides
stored as a reply on the branch, usage, live events), OpenAI error objects for every refusal, nothing stored by
a refused call. The model is the `echo` provider or a fake OpenAI-compatible upstream on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, join, reply, snapshot, start_thread
from tests.gateway_fake import MODELS, USAGE, FakeUpstream, fake_upstream
from tests.harness import Actor, Client, Loop, ServerThread, test_settings
from tests.ws import CONVERSATION_EVENTS, WsClient

TREE = """query($c: ID!) { conversation(id: $c) { tokenCount messageCount threads(first: 10) { nodes {
  root { id } } } } }"""
NODES = """query($r: ID!) { threadTree(rootId: $r) { nodes { id parentId role content model
  usage { promptTokens completionTokens totalTokens } } } }"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    yield from fake_upstream()


@pytest.fixture(scope="module")
def gateway(dsn: str, fake: FakeUpstream) -> Iterator[ServerThread]:
    server = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            openai_base_url=fake.base_url,
            openai_api_key="sk-upstream",
            openai_models=MODELS,
            openai_default_model="fake-ok",
            echo_delay_seconds=0.0,
            request_max_bytes=64 * 1024,
            message_max_bytes=4096,
            # fake-ok: 46 tokens for the prompt (1070 - the 1024 reserved for the reply)
            model_context_tokens=(("echo", 8192), ("fake-ok", 1070)),
            run_workers=0,
            run_timeout_seconds=2.0,  # bounds a gateway call too (fake-hang)
        )
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clear(fake: FakeUpstream) -> None:
    fake.requests.clear()
    fake.headers.clear()


def post(
    server: ServerThread, actor: Actor | None, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        content=content,
        headers={"Content-Type": "application/json", **sent, **(headers or {})},
        timeout=30,
    )


def events(response: httpx.Response) -> list[Any]:
    """The data of each server-sent event: chunk objects, and the final "[DONE]"."""
    out: list[Any] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def tree(actor: Actor, root_id: str) -> list[dict[str, Any]]:
    return list(actor.client.ok(NODES, {"r": root_id})["threadTree"]["nodes"])


def on(server: ServerThread, actor: Actor) -> Actor:
    return Actor(actor.tenant_id, actor.user_id, actor.api_key, Client(server.url, actor.api_key))


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


# models -------------------------------------------------------------------------------------------------


def test_models_lists_echo_and_the_endpoints_models(gateway: ServerThread, admin: Actor) -> None:
    response = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {admin.api_key}"})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [(m["id"], m["owned_by"], m["object"]) for m in body["data"]] == [
        ("echo", "echo", "model"),
        *sorted((name, "openai", "model") for name in MODELS),
    ]
    one = httpx.get(f"{gateway.url}/v1/models/echo", headers={"Authorization": f"Bearer {admin.api_key}"})
    assert one.json() == {"id": "echo", "object": "model", "created": 0, "owned_by": "echo"}
    missing = httpx.get(f"{gateway.url}/v1/models/nope", headers={"Authorization": f"Bearer {admin.api_key}"})
    assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"


def test_models_and_completions_need_an_api_key(gateway: ServerThread, admin: Actor) -> None:
    response = httpx.get(f"{gateway.url}/v1/models")
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    wrong = post(
        gateway, None, {"model": "echo", "messages": [user("hi")]}, {"Authorization": "Bearer tl_nope"}
    )
    assert wrong.status_code == 401
    assert error_of(wrong) == {
        "message": "Invalid API key",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


# plain proxy ---------------------------------------------------------------------------------------------


def test_without_a_session_it_is_a_plain_proxy_that_stores_nothing(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream, loop: Loop, dsn: str
) -> None:
    before = snapshot(loop, dsn)
    body = {
        "model": "fake-ok",
        "messages": [{"role": "system", "content": "Be brief."}, user("hi")],
        "temperature": 0.2,
    }
    response = post(gateway, admin, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == USAGE
    [sent] = fake.requests
    assert sent == {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert fake.headers[0]["authorization"] == "Bearer sk-upstream"
    assert snapshot(loop, dsn) == before


def test_a_streamed_proxy_call_relays_the_chunks_and_ends_with_done(
    gateway: ServerThread, admin: Actor
) -> None:
    response = post(gateway, admin, {"model": "fake-ok", "messages": [user("hi")], "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    out = events(response)
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello there!"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    with_usage = events(
        post(
            gateway,
            admin,
            {
                "model": "fake-ok",
                "messages": [user("hi")],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    )
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"] == USAGE


def test_the_echo_model_answers_without_any_upstream(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    answer = post(gateway, admin, {"model": "echo", "messages": [user("ping pong")]}).json()
    assert answer["choices"][0]["message"]["content"] == "echo: ping pong"
    assert answer["usage"]["completion_tokens"] == 3
    streamed = events(
        post(gateway, admin, {"model": "echo", "messages": [user("ping pong")], "stream": True})
    )
    assert [c["choices"][0]["delta"].get("content") for c in streamed[:-1] if c["choices"]] == [
        "", "echo: ", "ping ", "pong", None,
    ]  # fmt: skip
    assert fake.requests == []


# sessions ------------------------------------------------------------------------------------------------


def _branch(actor: Actor, conversation_id: str, turns: list[tuple[str, str]]) -> list[str]:
    ids = [start_thread(actor, conversation_id, turns[0][1], role=turns[0][0])]
    for role, content in turns[1:]:
        ids.append(reply(actor, ids[-1], content, role=role))
    return ids


def test_a_session_gets_its_branch_prepended_and_keeps_both_sides_as_a_reply(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="chat-1")
    ids = _branch(owner, cid, [("USER", "first question"), ("ASSISTANT", "first answer")])
    reply(owner, ids[0], "a sibling branch")  # a leaf, but older than the one below
    leaf = reply(owner, ids[1], "second question")
    body = {
        "model": "fake-ok",
        "messages": [{"role": "system", "content": "Be brief."}, user("third question")],
        "session_id": "chat-1",
    }
    response = post(gateway, owner, body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello there!"
    assert response.headers["x-threadline-conversation-id"] == cid
    [sent] = fake.requests
    assert "session_id" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "user", "content": "third question"},
    ]
    nodes = {n["content"]: n for n in tree(owner, ids[0])}
    stored_user, stored_reply = nodes["third question"], nodes["Hello there!"]
    assert (stored_user["parentId"], stored_user["role"], stored_user["content"]) == (
        leaf,
        "USER",
        "third question",
    )
    assert (stored_reply["parentId"], stored_reply["role"], stored_reply["content"]) == (
        stored_user["id"],
        "ASSISTANT",
        "Hello there!",
    )
    assert stored_reply["model"] == "fake-ok"
    assert stored_reply["usage"] == {"promptTokens": 11, "completionTokens": 3, "totalTokens": 14}
    conversation = owner.client.ok(TREE, {"c": cid})["conversation"]
    assert conversation["tokenCount"] == 14 and conversation["messageCount"] == 6
    # The next call continues from the stored reply, by header this time.
    post(
        gateway, owner, {"model": "fake-ok", "messages": [user("fourth")]}, {"X-Threadline-Session": "chat-1"}
    )
    assert fake.requests[1]["messages"][-3:] == [
        {"role": "user", "content": "third question"},
        {"role": "assistant", "content": "Hello there!"},
        {"role": "user", "content": "fourth"},
    ]


def test_a_session_continues_the_callers_current_branch_and_puts_them_on_the_reply(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="branches")
    root = start_thread(owner, cid, "question")
    older = reply(owner, root, "older answer", role="ASSISTANT")
    reply(owner, root, "newer answer", role="ASSISTANT")
    owner.client.ok(
        "mutation($r: ID!, $m: ID!) { threadSetCurrent(rootId: $r, messageId: $m) { replyCount } }",
        {"r": root, "m": older},
    )
    post(gateway, owner, {"model": "fake-ok", "messages": [user("go on")], "session_id": "branches"})
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "older answer"},
        {"role": "user", "content": "go on"},
    ]
    current = owner.client.ok(
        "query($c: ID!) { conversation(id: $c) { threads(first: 5) { nodes { currentLeaf { content } } } } }",
        {"c": cid},
    )
    assert current["conversation"]["threads"]["nodes"] == [{"currentLeaf": {"content": "Hello there!"}}]
    post(gateway, owner, {"model": "fake-ok", "messages": [user("and then")], "session_id": "branches"})
    assert fake.requests[1]["messages"][1:4] == [
        {"role": "assistant", "content": "older answer"},
        {"role": "user", "content": "go on"},
        {"role": "assistant", "content": "Hello there!"},
    ]


def test_a_session_is_named_by_the_conversations_id_too_and_cut_to_its_max_history(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, maxHistoryMessages=2)
    _branch(owner, cid, [("USER", "one"), ("ASSISTANT", "two"), ("USER", "three")])
    response = post(gateway, owner, {"model": "fake-ok", "messages": [user("four")], "session_id": cid})
    assert response.status_code == 200, response.text
    assert fake.requests[0]["messages"] == [
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "user", "content": "four"},
    ]


def test_the_branch_is_trimmed_to_the_models_context_like_a_run(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream, loop: Loop, dsn: str
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="small")
    # fake-ok has a 46-token prompt budget; each message costs 4 + 10 tokens, the prompt 3 more: the request
    # and two of the branch fit.
    _branch(
        owner, cid, [("USER", "a" * 40), ("ASSISTANT", "b" * 40), ("USER", "c" * 40), ("ASSISTANT", "d" * 40)]
    )
    post(gateway, owner, {"model": "fake-ok", "messages": [user("e" * 40)], "session_id": "small"})
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": "c" * 40},
        {"role": "assistant", "content": "d" * 40},
        {"role": "user", "content": "e" * 40},
    ]
    before = snapshot(loop, dsn)
    too_big = post(gateway, owner, {"model": "fake-ok", "messages": [user("x" * 400)], "session_id": "small"})
    assert too_big.status_code == 400
    assert error_of(too_big)["code"] == "context_length_exceeded"
    assert snapshot(loop, dsn) == before and len(fake.requests) == 1


def test_a_conversation_without_messages_starts_a_thread_with_the_request(
    gateway: ServerThread, admin: Actor
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="fresh")
    answer = post(
        gateway, owner, {"model": "echo", "messages": [user("hello")], "session_id": "fresh"}
    ).json()
    assert answer["choices"][0]["message"]["content"] == "echo: hello"
    [thread] = owner.client.ok(TREE, {"c": cid})["conversation"]["threads"]["nodes"]
    assert [(n["role"], n["content"]) for n in tree(owner, thread["root"]["id"])] == [
        ("USER", "hello"),
        ("ASSISTANT", "echo: hello"),
    ]


def test_live_subscribers_see_the_same_delta_and_done_events_as_for_runs(
    gateway: ServerThread, admin: Actor
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="live")
    start_thread(owner, cid, "root")
    ws = WsClient(gateway.ws_url, owner.api_key)
    try:
        ws.subscribe(CONVERSATION_EVENTS, {"c": cid})
        response = post(
            gateway,
            owner,
            {"model": "fake-ok", "messages": [user("hi")], "session_id": "live", "stream": True},
        )
        assert events(response)[-1] == "[DONE]"
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "message.done":
            event = ws.next_event()["conversationEvents"]
            if event["type"] in ("message.delta", "message.done"):
                seen.append(event)
    finally:
        ws.close()
    deltas, done = seen[:-1], seen[-1]
    assert "".join(d["delta"] for d in deltas) == "Hello there!"
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    assert {d["messageId"] for d in deltas} == {done["messageId"]} and done["runId"] is None
    assert done["usage"] == {"promptTokens": 11, "completionTokens": 3, "totalTokens": 14}


def test_unknown_deleted_and_other_tenants_sessions_are_not_found(
    gateway: ServerThread, make_tenant: Any, loop: Loop, dsn: str, fake: FakeUpstream
) -> None:
    owner = on(gateway, make_tenant())
    stranger = on(gateway, make_tenant())
    cid = create_conversation(owner, sessionId="mine")
    start_thread(owner, cid, "root")
    gone = create_conversation(owner, sessionId="gone")
    owner.client.ok("mutation($id: ID!) { conversationDelete(id: $id) { id } }", {"id": gone})
    before = snapshot(loop, dsn)
    for actor, session in (
        (owner, "nope"),
        (owner, "gone"),
        (owner, gone),
        (stranger, "mine"),
        (stranger, cid),
    ):
        response = post(gateway, actor, {"model": "fake-ok", "messages": [user("hi")], "session_id": session})
        assert response.status_code == 404, (session, response.text)
        error = error_of(response)
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "session_not_found",
            "session_id",
        )
    assert snapshot(loop, dsn) == before and fake.requests == []


def test_read_only_and_archived_sessions_are_refused(
    gateway: ServerThread, admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    owner = on(gateway, admin)
    viewer = on(gateway, make_user(admin))
    cid = create_conversation(owner, sessionId="shared")
    start_thread(owner, cid, "root")
    join(owner, viewer, cid, "VIEWER")
    before = snapshot(loop, dsn)
    forbidden = post(gateway, viewer, {"model": "echo", "messages": [user("hi")], "session_id": "shared"})
    assert forbidden.status_code == 403 and error_of(forbidden)["type"] == "permission_error"
    owner.client.ok("mutation($id: ID!) { conversationArchive(id: $id) { id } }", {"id": cid})
    before = snapshot(loop, dsn)
    archived = post(gateway, owner, {"model": "echo", "messages": [user("hi")], "session_id": "shared"})
    assert archived.status_code == 409 and error_of(archived)["code"] == "conflict"
    assert snapshot(loop, dsn) == before


# bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"model": "echo"}', "messages"),
        (b'{"model": "echo", "messages": []}', "messages"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "echo", "messages": [{"role": "robot", "content": "hi"}]}', "messages[0].role"),
        (b'{"model": "echo", "messages": [{"role": "user"}]}', "messages[0].content"),
        (b'{"model": "echo", "messages": [{"role": "user", "content": 7}]}', "messages[0].content"),
        (b'{"model": "echo", "messages": [{"role": "tool", "content": "x"}]}', "messages[0].tool_call_id"),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "\\ud800"}]}', None),
        (
            b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}], "session_id": ""}',
            "session_id",
        ),
        (b"[" * 100 + b"]" * 100, None),
    ],
)
def test_malformed_bodies_are_400_invalid_request_errors(
    gateway: ServerThread, admin: Actor, body: bytes, param: str | None
) -> None:
    response = post(gateway, admin, body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_an_unknown_model_is_404_model_not_found(
    gateway: ServerThread, admin: Actor, fake: FakeUpstream
) -> None:
    response = post(gateway, admin, {"model": "gpt-nope", "messages": [user("hi")]})
    assert response.status_code == 404
    assert error_of(response) == {
        "message": "The model `gpt-nope` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert fake.requests == []


def test_an_oversized_body_is_413_and_an_oversized_message_400_with_nothing_stored(
    gateway: ServerThread, admin: Actor, loop: Loop, dsn: str, fake: FakeUpstream
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="big")
    start_thread(owner, cid, "root")
    before = snapshot(loop, dsn)
    huge = post(gateway, owner, {"model": "echo", "messages": [user("x" * 70_000)]})
    assert huge.status_code == 413 and error_of(huge)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: stopped while it arrives
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    streamed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=chunked(),
        headers={"Authorization": f"Bearer {owner.api_key}", "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413
    # message_max_bytes is 4096 on this server: a stored message may not be bigger.
    long = post(gateway, owner, {"model": "fake-ok", "messages": [user("y" * 5000)], "session_id": "big"})
    assert long.status_code == 400
    assert error_of(long)["param"] == "messages[0].content"
    assert snapshot(loop, dsn) == before and fake.requests == []


def test_the_upstreams_refusal_is_passed_on_and_nothing_is_stored(
    gateway: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="refused")
    start_thread(owner, cid, "root")
    before = snapshot(loop, dsn)
    for stream in (False, True):
        response = post(
            gateway,
            owner,
            {"model": "fake-400", "messages": [user("hi")], "session_id": "refused", "stream": stream},
        )
        assert response.status_code == 400
        assert error_of(response) == {
            "message": "bad thing",
            "type": "invalid_request_error",
            "param": "tools",
            "code": "bad",
        }
    assert snapshot(loop, dsn) == before


def test_a_stream_that_breaks_midway_ends_with_an_error_and_keeps_what_was_said(
    gateway: ServerThread, admin: Actor
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="broken")
    root = start_thread(owner, cid, "root")
    response = post(
        gateway,
        owner,
        {"model": "fake-broken", "messages": [user("hi")], "session_id": "broken", "stream": True},
    )
    assert response.status_code == 200
    out = events(response)
    assert "[DONE]" not in out
    assert out[-1]["error"]["code"] == "provider_error"
    assert [(n["role"], n["content"]) for n in tree(owner, root)][-2:] == [
        ("USER", "hi"),
        ("ASSISTANT", "partial"),
    ]
    plain = post(gateway, owner, {"model": "fake-broken", "messages": [user("hi")]})
    assert plain.status_code == 502 and error_of(plain)["type"] == "server_error"


def test_rate_limits_apply_to_completions(gateway: ServerThread, admin: Actor, make_user: Any) -> None:
    member = on(gateway, make_user(admin))
    created = admin.client.ok(
        "mutation($i: RateLimitProfileCreateInput!) { rateLimitProfileCreate(input: $i) { id } }",
        {"i": {"name": "one run", "windowSeconds": 86_400, "runsPerWindow": 1}},
    )["rateLimitProfileCreate"]
    admin.client.ok(
        "mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) { requestsPerWindow } }",
        {"u": member.user_id, "p": created["id"]},
    )
    assert post(gateway, member, {"model": "echo", "messages": [user("hi")]}).status_code == 200
    refused = post(gateway, member, {"model": "echo", "messages": [user("hi")]})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert error_of(refused)["code"] == "rate_limit_exceeded"


def test_a_client_that_leaves_midway_still_gets_its_reply_stored_and_finished(
    gateway: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="leaver")
    root = start_thread(owner, cid, "root")
    body = {"model": "fake-slow", "messages": [user("talk")], "session_id": "leaver", "stream": True}
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {owner.api_key}"},
        timeout=30,
    ) as response:
        received = 0
        for line in response.iter_lines():
            if '"content":"w' in line:
                received += 1
                if received == 5:
                    break  # leave: the connection is closed with the stream unread

    async def finished() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            value = await conn.fetchval(
                """SELECT s.finished_at IS NOT NULL FROM message m JOIN message_stream s ON s.id = m.id
                   WHERE m.conversation_id = (SELECT id FROM conversation WHERE session_id = 'leaver')
                     AND m.role = 'ASSISTANT'"""
            )
            return bool(value)
        finally:
            await conn.close()

    deadline = time.monotonic() + 15
    while not loop.run(finished()):
        assert time.monotonic() < deadline, "the reply was never finished"
        loop.run(asyncio.sleep(0.1))
    [assistant] = [n for n in tree(owner, root) if n["role"] == "ASSISTANT"]
    assert assistant["content"].startswith("w0 w1 w2 w3 w4 ")
    assert len(assistant["content"].split()) < 200  # the upstream was stopped, not read to its end


def test_a_malformed_upstream_stream_is_a_502_before_the_first_chunk_and_an_error_event_after(
    gateway: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="garbage")
    root = start_thread(owner, cid, "root")
    before = snapshot(loop, dsn)
    empty = post(gateway, owner, {"model": "fake-empty", "messages": [user("hi")], "session_id": "garbage"})
    assert empty.status_code == 502
    assert error_of(empty)["code"] == "provider_bad_stream"
    assert snapshot(loop, dsn) == before
    out = events(
        post(
            gateway,
            owner,
            {"model": "fake-garbage", "messages": [user("hi")], "session_id": "garbage", "stream": True},
        )
    )
    assert out[-1]["error"]["code"] == "provider_bad_stream" and "[DONE]" not in out
    assert [(n["role"], n["content"]) for n in tree(owner, root)][-2:] == [
        ("USER", "hi"),
        ("ASSISTANT", "partial"),
    ]


def test_a_model_that_hangs_ends_the_call_with_a_timeout_and_a_finished_reply(
    gateway: ServerThread, admin: Actor
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="hang")
    root = start_thread(owner, cid, "root")
    out = events(
        post(
            gateway,
            owner,
            {"model": "fake-hang", "messages": [user("hi")], "session_id": "hang", "stream": True},
        )
    )
    assert out[-1]["error"]["code"] == "timeout"
    assert [(n["role"], n["content"]) for n in tree(owner, root)][-1] == ("ASSISTANT", "waiting")
    plain = post(gateway, owner, {"model": "fake-hang", "messages": [user("hi")]})
    assert plain.status_code == 502 and error_of(plain)["code"] == "timeout"


def test_concurrent_calls_on_one_session_each_keep_their_exchange(
    gateway: ServerThread, admin: Actor
) -> None:
    owner = on(gateway, admin)
    cid = create_conversation(owner, sessionId="busy")
    root = start_thread(owner, cid, "root")

    def call(i: int) -> int:
        body = {"model": "echo", "messages": [user(f"q{i}")], "session_id": "busy", "stream": i % 2 == 0}
        return post(gateway, owner, body).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(call, range(4))) == [200] * 4
    nodes = tree(owner, root)
    questions = {n["content"]: n for n in nodes if n["role"] == "USER" and n["content"].startswith("q")}
    assert sorted(questions) == ["q0", "q1", "q2", "q3"]
    answers = {n["parentId"]: n["content"] for n in nodes if n["role"] == "ASSISTANT"}
    assert {answers[q["id"]] for q in questions.values()} == {"echo: q0", "echo: q1", "echo: q2", "echo: q3"}
    assert owner.client.ok(TREE, {"c": cid})["conversation"]["messageCount"] == 9
