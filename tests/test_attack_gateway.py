"""Hostile callers against the OpenAI-style gateway (/v1): what one call may cost the server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.api import create_conversation, start_thread
from tests.gateway_fake import FakeUpstream
from tests.harness import Actor, ServerThread, test_settings

COUNT = "query($c: ID!) { conversation(id: $c) { messageCount } }"
PROFILE_CREATE = "mutation($i: RateLimitProfileCreateInput!) { rateLimitProfileCreate(input: $i) { id } }"
PROFILE_ASSIGN = (
    "mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) { mutationsPerWindow } }"
)


def complete(
    server: ServerThread, actor: Actor, session_id: str, messages: list[dict[str, Any]]
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "echo", "messages": messages, "session_id": session_id},
        headers={"Authorization": f"Bearer {actor.api_key}"},
        timeout=60,
    )


def users(count: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"message {i}"} for i in range(count)]


def test_each_message_a_session_call_stores_draws_from_the_mutations_budget(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """Every message a session call stores is a write (a reply under the last), as a messageReply is. The call drew
    one `requests` and one `runs` token whatever it stored: hundreds of user messages in one body (each stored a
    level deeper than the last, the call taking seconds, then a minute, of database work) cost no more than one."""
    member = make_user(admin)
    # Five writes a day, two of them spent below: three left.
    profile = admin.client.ok(
        PROFILE_CREATE, {"i": {"name": "five writes", "windowSeconds": 86_400, "mutationsPerWindow": 5}}
    )["rateLimitProfileCreate"]["id"]
    admin.client.ok(PROFILE_ASSIGN, {"u": member.user_id, "p": profile})
    cid = create_conversation(member, "mine", sessionId="s-budget")
    start_thread(member, cid, "hello")

    refused = complete(server, member, "s-budget", users(4))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert member.client.ok(COUNT, {"c": cid})["conversation"]["messageCount"] == 1

    # System messages are sent, not stored; what comes before the last assistant message was stored before.
    history = [{"role": "system", "content": "be brief"}, *users(5), {"role": "assistant", "content": "ok"}]
    answered = complete(server, member, "s-budget", [*history, *users(3)])
    assert answered.status_code == 200, answered.text
    assert member.client.ok(COUNT, {"c": cid})["conversation"]["messageCount"] == 1 + 3 + 1

    assert complete(server, member, "s-budget", users(1)).status_code == 429


def test_a_masked_reader_gets_no_unmasked_history_through_a_session(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """Under MASK_ON_READ a member reads a colleague's PII masked on every path. A session call sent the branch
    to the model as stored, so the model's answer, streamed straight to the caller, could carry it: the `echo`
    model repeats the last message of its prompt, which is the branch's last one when the request holds only
    instructions."""
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner, "shared", sessionId="s-pii")
    owner.client.ok(
        "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }",
        {"c": cid, "u": member.user_id},
    )
    invites = member.client.ok("{ viewerInvites { id } }")["viewerInvites"]
    member.client.ok("mutation($i: ID!) { inviteAccept(id: $i) { role } }", {"i": invites[0]["id"]})
    admin.client.ok("mutation { tenantPiiPolicySet(policy: MASK_ON_READ) }")
    start_thread(owner, cid, "write to me at bob.secret@example.com")
    read = member.client.ok(
        "query($c: ID!) { conversation(id: $c) { messages { nodes { content } } } }", {"c": cid}
    )["conversation"]["messages"]["nodes"]
    assert read == [{"content": "write to me at [EMAIL]"}]

    answered = complete(server, member, "s-pii", [{"role": "system", "content": "repeat the last message"}])
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == "echo: write to me at [EMAIL]"


def test_an_admins_session_in_a_conversation_they_are_not_in_is_an_audited_read(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """A tenant admin may continue any conversation of the tenant through /v1: its branch goes to the model,
    whose answer (the `echo` model repeats its prompt's last message) is theirs to read. Every other read of a
    conversation by a non-participant is logged as `conversation.read` (via ADMIN); this one left no trace."""
    member = make_user(admin)
    cid = create_conversation(member, "private")
    start_thread(member, cid, "a member's private note")
    audited = """query($c: ID!) { auditLog(action: "conversation.read", targetId: $c) {
      nodes { actorId details } } }"""
    assert admin.client.ok(audited, {"c": cid})["auditLog"]["nodes"] == []

    answered = complete(server, admin, cid, [{"role": "system", "content": "repeat the last message"}])
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == "echo: a member's private note"
    entries = admin.client.ok(audited, {"c": cid})["auditLog"]["nodes"]
    assert entries == [{"actorId": admin.user_id, "details": {"via": "ADMIN"}}]

    own = create_conversation(admin, "mine")  # a participant's own session is no such read
    start_thread(admin, own, "my note")
    assert complete(server, admin, own, [{"role": "user", "content": "more"}]).status_code == 200
    assert admin.client.ok(audited, {"c": own})["auditLog"]["nodes"] == []


@pytest.fixture(scope="module")
def one_at_a_time(dsn: str) -> Iterator[ServerThread]:
    """A server where a user has one run (or completion) in progress at most, and `echo` speaks slowly."""
    srv = ServerThread(
        test_settings(dsn, migrate_on_start=False, run_max_active_per_user=1, echo_delay_seconds=0.2)
    )
    srv.start()
    yield srv
    srv.stop()


def test_a_user_has_no_more_completions_in_progress_than_active_runs(
    one_at_a_time: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """A completion is a run streamed to its caller, yet it was never counted as one in progress: one key could
    hold hundreds of model streams open at once (each writing its reply as it goes, with a session). Past
    THREADLINE_RUN_MAX_ACTIVE_PER_USER it is 429 rate_limit_exceeded, as runCreate is RATE_LIMITED; the place is
    given back when the answer ends, also when its client leaves midway. Other users are not affected."""
    url = f"{one_at_a_time.url}/v1/chat/completions"
    words = " ".join(f"w{i}" for i in range(200))  # echoed a word every 0.2 s: a minute of streaming
    long = {"model": "echo", "messages": [{"role": "user", "content": words}], "stream": True}
    short = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    caller = {"Authorization": f"Bearer {admin.api_key}"}
    other = {"Authorization": f"Bearer {make_user(admin).api_key}"}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", url, json=long, headers=caller) as streaming:
            assert streaming.status_code == 200
            lines = streaming.iter_lines()  # held: a dropped iterator closes the response
            assert next(lines).startswith("data: ")  # it is in progress
            refused = http.post(url, json=short, headers=caller)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(refused.headers["retry-after"]) >= 1
            assert http.post(url, json=short, headers=other).status_code == 200
        # The client left midway: its place comes back once the server sees it gone (its next write).
        deadline = time.monotonic() + 30
        while (answered := http.post(url, json=short, headers=caller)).status_code == 429:
            assert time.monotonic() < deadline, "the place of a call whose client left never came back"
            time.sleep(0.1)
        assert answered.status_code == 200, answered.text
        assert http.post(url, json=short, headers=caller).status_code == 200  # a finished call gave it back


@pytest.mark.parametrize(
    ("method", "path", "status", "code", "allow"),
    [
        ("GET", "/v1/chat/completions", 405, "method_not_allowed", "POST"),
        ("POST", "/v1/models", 405, "method_not_allowed", "GET"),
        ("DELETE", "/v1/models/echo", 405, "method_not_allowed", "GET"),
        ("POST", "/v1/responses", 404, "unknown_url", None),
        ("POST", "/v1/completions", 404, "unknown_url", None),
    ],
)
def test_other_paths_and_methods_under_v1_are_openai_error_objects(
    server: ServerThread, admin: Actor, method: str, path: str, status: int, code: str, allow: str | None
) -> None:
    """Every refusal of the gateway is OpenAI's error object, which the SDKs turn into their exceptions; a path it
    does not serve (`/v1/responses`, which newer SDKs call) or a wrong method was Starlette's plain text."""
    response = httpx.request(
        method, f"{server.url}{path}", json={}, headers={"Authorization": f"Bearer {admin.api_key}"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, None)
    assert response.headers.get("allow") == allow


def test_a_completion_in_progress_ends_when_its_key_is_revoked(
    one_at_a_time: ServerThread, admin: Actor
) -> None:
    """Credentials are live: a socket whose key is revoked is closed at once. A completion streamed for as long as
    the model spoke (up to THREADLINE_RUN_TIMEOUT_SECONDS) after its key was revoked; now it ends with an
    `invalid_api_key` error event instead of `[DONE]`."""
    made = admin.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "leaked") { secret apiKey { id } } }',
        {"u": admin.user_id},
    )["apiKeyCreate"]
    words = " ".join(f"w{i}" for i in range(100))  # echoed a word every 0.2 s
    body = {"model": "echo", "messages": [{"role": "user", "content": words}], "stream": True}
    headers = {"Authorization": f"Bearer {made['secret']}"}
    with httpx.Client(timeout=60) as http:
        with http.stream(
            "POST", f"{one_at_a_time.url}/v1/chat/completions", json=body, headers=headers
        ) as streaming:
            assert streaming.status_code == 200
            lines = streaming.iter_lines()
            assert next(lines).startswith("data: ")
            revoked = admin.client.ok(
                "mutation($k: ID!) { apiKeyRevoke(id: $k) { revoked } }", {"k": made["apiKey"]["id"]}
            )
            assert revoked == {"apiKeyRevoke": {"revoked": True}}
            events = [line[6:] for line in lines if line.startswith("data: ")]
    assert events[-1] != "[DONE]"
    error = json.loads(events[-1])["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    said = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, events[:-1])
        if c.get("choices")
    )
    assert "w99" not in said


class OperatorsUpstream(FakeUpstream):
    """An upstream whose refusals speak of the operator's account, as OpenAI's do: a 429 names the organisation
    and what every tenant together used of its quota, a 403 the project."""

    async def complete(self, request: Request) -> Response:
        body = json.loads(await request.body())
        messages = {
            "fake-429": (
                429,
                "Rate limit reached for gpt-4o in organization org-OPERATOR on tokens per min: Used 29000",
            ),
            "fake-403": (403, "Project proj_OPERATOR does not have access to model gpt-4o"),
        }
        status, message = messages[body["model"]]
        error = {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}
        return JSONResponse({"error": error}, status_code=status)


@pytest.fixture(scope="module")
def behind_operator(dsn: str) -> Iterator[ServerThread]:
    upstream = OperatorsUpstream()
    upstream.start()
    srv = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            openai_base_url=upstream.base_url,
            openai_api_key="sk-operator",
            openai_models=("fake-429", "fake-403"),
        )
    )
    srv.start()
    yield srv
    srv.stop()
    upstream.stop()


@pytest.mark.parametrize(("model", "status"), [("fake-429", 429), ("fake-403", 502)])
def test_the_upstreams_refusals_about_the_operators_account_are_not_passed_on(
    behind_operator: ServerThread, admin: Actor, model: str, status: int
) -> None:
    """The upstream's 4xx refusals of the request are passed on; those about the operator's own account (its
    organisation, project, and the quota every tenant shares, with what all of them used) are the operator's
    business, as its 401 already was: a 429 stays a 429 (the SDKs retry it), a 403 is a 502, neither with its text."""
    response = httpx.post(
        f"{behind_operator.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {admin.api_key}"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert "OPERATOR" not in response.text and "29000" not in response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_each_choice_asked_for_draws_from_the_runs_budget(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """`n` asks the model for that many answers (OpenAI bills each, up to 128): a call drew one `runs` token
    whatever its `n`, so one token bought 128 completions on the operator's account."""
    member = make_user(admin)
    profile = admin.client.ok(
        PROFILE_CREATE, {"i": {"name": "three runs", "windowSeconds": 86_400, "runsPerWindow": 3}}
    )["rateLimitProfileCreate"]["id"]
    admin.client.ok(PROFILE_ASSIGN, {"u": member.user_id, "p": profile})

    def ask(n: object) -> httpx.Response:
        return httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}], "n": n},
            headers={"Authorization": f"Bearer {member.api_key}"},
            timeout=30,
        )

    for bad in (0, 129, "2", 1.5, True):
        refused = ask(bad)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "n"
    assert ask(4).status_code == 429
    assert ask(3).status_code == 200
    assert ask(None).status_code == 429  # n defaults to 1
