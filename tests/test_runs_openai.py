"""Runs against a fake OpenAI-compatible streaming server on 127.0.0.1: the exact prompt sent (history
selection and trimming), provider failures, cancel mid-stream, concurrent branches, reported usage."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api import create_conversation, reply, start_thread, stream_cursor
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import (
    RUN_CANCEL,
    FakeOpenAI,
    create_run,
    fake_openai,
    on,
    runs_server,
    settle,
    stream_events,
    wait_for,
    wait_for_chunks,
)
from tests.ws import CONVERSATION_EVENTS, WsClient

STREAM_TYPES = ("message.delta", "message.done", "error")
TOKEN_COUNT = "query($c: ID!) { conversation(id: $c) { tokenCount } }"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    yield from fake_openai()


@pytest.fixture(scope="module")
def runs(dsn: str, fake: FakeOpenAI) -> Iterator[ServerThread]:
    server = runs_server(
        dsn,
        run_workers=4,
        run_timeout_seconds=2.0,
        run_max_active_per_user=100,
        openai_base_url=fake.base_url,
        openai_api_key="sk-test",
        openai_models=FakeOpenAI.MODELS,
        openai_default_model="fake-ok",
        # fake-small: a 45-token prompt budget (1069 - the default 1024 reserved for the reply).
        model_context_tokens=(("fake-small", 1069),),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _settle(runs: ServerThread, fake: FakeOpenAI, loop: Loop, dsn: str) -> Iterator[None]:
    fake.requests.clear()
    yield
    settle(loop, dsn, runs.app.state.services.settings.run_queue)


@pytest.fixture
def owner(admin: Actor, runs: ServerThread) -> Actor:
    return on(runs, admin)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion}


def _sent(fake: FakeOpenAI, model: str) -> list[dict[str, str]]:
    [request] = fake.requests_for(model)
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    return request["messages"]  # type: ignore[no-any-return]


def _chain(actor: Actor, conversation_id: str, turns: list[tuple[str, str]]) -> list[str]:
    """A root and replies each under the previous one: [(role, content), ...] -> ids."""
    ids = [start_thread(actor, conversation_id, turns[0][1], role=turns[0][0])]
    for role, content in turns[1:]:
        ids.append(reply(actor, ids[-1], content, role=role))
    return ids


def test_the_prompt_is_the_branch_cut_to_max_history_with_instructions_first(
    owner: Actor, fake: FakeOpenAI
) -> None:
    cid = create_conversation(owner)
    ids = _chain(
        owner,
        cid,
        [
            ("USER", "first question"),
            ("ASSISTANT", "first answer"),
            ("USER", "second question"),
            ("ASSISTANT", "second answer"),
            ("SYSTEM", "a note"),
            ("USER", "third question"),
        ],
    )
    reply(owner, ids[0], "a sibling branch")
    reply(owner, ids[-1], "a reply after the run's message")
    owner.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": ids[3]})
    run = create_run(
        owner, ids[-1], provider="openai", model="fake-ok", instructions="Be brief.", maxHistoryMessages=3
    )
    assert wait_for(owner, run["id"])["status"] == "COMPLETED"
    assert _sent(fake, "fake-ok") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "second question"},
        {"role": "system", "content": "a note"},
        {"role": "user", "content": "third question"},
    ]
    assert fake.headers[0]["Authorization"] == "Bearer sk-test"


def test_the_conversations_max_history_applies_when_the_run_sets_none(owner: Actor, fake: FakeOpenAI) -> None:
    cid = create_conversation(owner, aiProvider="openai", model="fake-ok", maxHistoryMessages=2)
    ids = _chain(owner, cid, [("USER", "one"), ("ASSISTANT", "two"), ("USER", "three")])
    run = create_run(owner, ids[-1])
    assert (run["provider"], run["model"]) == ("openai", "fake-ok")
    wait_for(owner, run["id"])
    assert _sent(fake, "fake-ok") == [
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]


def test_the_prompt_is_trimmed_oldest_first_to_the_models_token_budget(
    owner: Actor, fake: FakeOpenAI
) -> None:
    cid = create_conversation(owner)
    # Each message is 40 bytes: 4 + 10 = 14 tokens; "Be brief." is 4 + 3 = 7; the prompt adds 3.
    # Four messages need 66 tokens; the budget of 45 keeps the last two (38).
    contents = [f"message number {i} " + "x" * (40 - len(f"message number {i} ")) for i in range(4)]
    ids = _chain(owner, cid, [("USER", c) for c in contents])
    run = wait_for(
        owner,
        create_run(owner, ids[-1], provider="openai", model="fake-small", instructions="Be brief.")["id"],
    )
    assert run["status"] == "COMPLETED"
    assert _sent(fake, "fake-small") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": contents[2]},
        {"role": "user", "content": contents[3]},
    ]


def test_a_message_too_large_for_the_budget_fails_the_run_without_calling_the_provider(
    owner: Actor, fake: FakeOpenAI
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "y" * 200)  # 4 + 50 + 3 = 57 tokens > 45
    run = wait_for(owner, create_run(owner, root, provider="openai", model="fake-small")["id"])
    assert run["status"] == "FAILED" and run["output"] is None and run["steps"] == []
    assert run["lastError"]["code"] == "CONTEXT_TOO_LARGE"
    assert fake.requests_for("fake-small") == []


def test_usage_reported_by_the_provider_is_recorded_on_message_run_and_conversation(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "question")
    run = wait_for(owner, create_run(owner, root, provider="openai", model="fake-ok")["id"])
    assert run["output"]["content"] == "Hello there!"
    assert run["usage"] == run["output"]["usage"] == _usage(11, 3)
    assert owner.client.ok(TOKEN_COUNT, {"c": cid})["conversation"]["tokenCount"] == 14
    # Without reported usage: the approximate prompt count (3 + 4 + 2) and one token per delta.
    other = wait_for(owner, create_run(owner, root, provider="openai", model="fake-nousage")["id"])
    assert other["usage"] == other["output"]["usage"] == _usage(9, 3)
    assert owner.client.ok(TOKEN_COUNT, {"c": cid})["conversation"]["tokenCount"] == 26
    done = [e["payload"] for e in stream_events(loop, dsn, cid, ("message.done",))]
    assert done == [
        {"messageId": run["output"]["id"], "runId": run["id"], "usage": _usage(11, 3)},
        {"messageId": other["output"]["id"], "runId": other["id"], "usage": _usage(9, 3)},
    ]


@pytest.mark.parametrize(
    ("model", "code", "message", "partial"),
    [
        (
            "fake-500",
            "PROVIDER_ERROR",
            'The provider answered HTTP 500: {"error": {"message": "model overloaded"}}',
            "",
        ),
        (
            "fake-garbage",
            "PROVIDER_BAD_STREAM",
            "Not a server-sent event line: 'this is not an event stream'",
            "partial",
        ),
        ("fake-badjson", "PROVIDER_BAD_STREAM", "Malformed JSON in the stream: '{not json'", "partial"),
        ("fake-hang", "TIMEOUT", "The run did not finish within 2 seconds", "waiting"),
    ],
)
def test_provider_failures_fail_the_run_keep_the_partial_output_and_publish_an_error(
    owner: Actor, loop: Loop, dsn: str, model: str, code: str, message: str, partial: str
) -> None:
    cid = create_conversation(owner)
    run = wait_for(
        owner, create_run(owner, start_thread(owner, cid, "question"), provider="openai", model=model)["id"]
    )
    assert run["status"] == "FAILED" and run["failedAt"] is not None and run["completedAt"] is None
    assert run["lastError"] == {"code": code, "message": message}
    output = run["output"]
    assert output["content"] == partial
    assert output["chunks"] == ([{"index": 0, "content": partial}] if partial else [])
    [step] = run["steps"]
    assert step["status"] == "FAILED" and step["failedAt"] is not None
    events = stream_events(loop, dsn, cid, STREAM_TYPES)
    assert [e["type"] for e in events] == ["message.delta"] * len(output["chunks"]) + ["error"]
    assert events[-1]["payload"] == {
        "code": code,
        "message": message,
        "runId": run["id"],
        "messageId": output["id"],
    }
    assert owner.client.code(RUN_CANCEL, {"id": run["id"]}) == "CONFLICT"


def test_a_length_cut_makes_the_run_incomplete(owner: Actor, loop: Loop, dsn: str) -> None:
    cid = create_conversation(owner)
    run = wait_for(
        owner,
        create_run(owner, start_thread(owner, cid, "long"), provider="openai", model="fake-length")["id"],
    )
    assert run["status"] == "INCOMPLETE" and run["completedAt"] is not None and run["lastError"] is None
    assert run["output"]["content"] == "Cut"
    assert run["steps"][0]["status"] == "COMPLETED"
    assert [e["type"] for e in stream_events(loop, dsn, cid, STREAM_TYPES)] == [
        "message.delta",
        "message.done",
    ]
    assert owner.client.code(RUN_CANCEL, {"id": run["id"]}) == "CONFLICT"


def test_cancel_mid_stream_keeps_the_partial_output_and_ends_with_one_done(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "count")
    run = create_run(owner, root, provider="openai", model="fake-slow")
    wait_for_chunks(owner, run["id"])
    cancelling = owner.client.ok(RUN_CANCEL, {"id": run["id"]})["runCancel"]
    assert cancelling["status"] == "CANCELLING"
    done = wait_for(owner, run["id"])
    assert done["status"] == "CANCELLED" and done["cancelledAt"] is not None and done["lastError"] is None
    content = done["output"]["content"]
    received = len(content.split())
    assert 1 <= received < 100
    assert content == "".join(f"w{i} " for i in range(received))
    assert "".join(c["content"] for c in done["output"]["chunks"]) == content
    # The provider reported nothing: the approximate prompt (3 + 4 + 2) and one token per delta received.
    assert done["usage"] == done["output"]["usage"] == _usage(9, received)
    [step] = done["steps"]
    assert step["status"] == "CANCELLED" and step["cancelledAt"] is not None
    events = stream_events(loop, dsn, cid, STREAM_TYPES)
    assert [e["type"] for e in events] == ["message.delta"] * len(done["output"]["chunks"]) + ["message.done"]
    assert [e["payload"]["index"] for e in events[:-1]] == list(range(len(events) - 1))
    assert events[-1]["payload"] == {
        "messageId": done["output"]["id"],
        "runId": run["id"],
        "usage": _usage(9, received),
    }
    assert owner.client.code(RUN_CANCEL, {"id": run["id"]}) == "CONFLICT"
    assert owner.client.ok(TOKEN_COUNT, {"c": cid})["conversation"]["tokenCount"] == 9 + received


def test_runs_on_two_branches_stream_at_once_each_with_its_own_branch(owner: Actor, fake: FakeOpenAI) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "question")
    left = reply(owner, root, "left branch")
    right = reply(owner, root, "right branch")
    # fake-pair answers only once both requests are streaming at the same time.
    runs = [create_run(owner, m, provider="openai", model="fake-pair") for m in (left, right)]
    finished = [wait_for(owner, r["id"]) for r in runs]
    assert [r["status"] for r in finished] == ["COMPLETED", "COMPLETED"]
    assert [r["output"]["parentId"] for r in finished] == [left, right]
    assert [r["output"]["content"] for r in finished] == ["Hello there!", "Hello there!"]
    sent = sorted((r["messages"] for r in fake.requests_for("fake-pair")), key=lambda m: m[-1]["content"])
    assert sent == [
        [{"role": "user", "content": "question"}, {"role": "user", "content": "left branch"}],
        [{"role": "user", "content": "question"}, {"role": "user", "content": "right branch"}],
    ]


def test_a_client_cannot_append_to_a_message_a_run_is_writing(owner: Actor) -> None:
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, "busy"), provider="openai", model="fake-slow")
    output = wait_for_chunks(owner, run["id"])["output"]
    error = owner.client.error(
        'mutation($id: ID!) { messageAppend(id: $id, delta: "x") { id } }', {"id": output["id"]}
    )
    assert error["extensions"]["code"] == "CONFLICT" and error["message"] == "A run is writing this message"
    owner.client.ok(RUN_CANCEL, {"id": run["id"]})
    assert wait_for(owner, run["id"])["status"] == "CANCELLED"


def test_a_subscriber_sees_the_deltas_in_order_then_exactly_one_done(
    owner: Actor, runs: ServerThread
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "question")
    client = WsClient(runs.ws_url, owner.api_key)
    try:
        # Resuming from the cursor taken now: the reply's event arrives even if the subscription registers after
        # the reply commits (a race under load), and it proves the subscription is live.
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": stream_cursor(owner)})
        reply(owner, root, "are you there?")
        assert client.events(1, ignore=("presence.update", "unread.update"))[0]["type"] == "thread.activity"
        asked = reply(owner, root, "count for me")
        run = create_run(owner, asked, provider="openai", model="fake-slow")
        wait_for_chunks(owner, run["id"], count=3)
        owner.client.ok(RUN_CANCEL, {"id": run["id"]})
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "message.done":
            seen.extend(e for e in client.events(1) if e["type"] in STREAM_TYPES)
        client.expect_quiet(0.5, ignore=("presence.update", "unread.update", "thread.activity"))
    finally:
        client.close()
    done = wait_for(owner, run["id"])
    chunks = done["output"]["chunks"]
    assert [e["type"] for e in seen] == ["message.delta"] * len(chunks) + ["message.done"]
    assert [(e["index"], e["delta"]) for e in seen[:-1]] == [(c["index"], c["content"]) for c in chunks]
    assert {e["messageId"] for e in seen} == {done["output"]["id"]} and {e["runId"] for e in seen} == {
        run["id"]
    }
    assert seen[-1]["usage"] == done["usage"]


def test_deleting_the_output_while_it_streams_fails_the_run(owner: Actor, loop: Loop, dsn: str) -> None:
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, "busy"), provider="openai", model="fake-slow")
    output = wait_for_chunks(owner, run["id"])["output"]
    owner.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": output["id"]})
    failed = wait_for(owner, run["id"])
    assert failed["status"] == "FAILED"
    assert failed["lastError"] == {
        "code": "OUTPUT_DELETED",
        "message": "The output message was deleted while it was written",
    }
    assert failed["output"]["content"] == ""
    assert stream_events(loop, dsn, cid, STREAM_TYPES)[-1]["type"] == "error"
