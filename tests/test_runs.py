"""Runs with the echo provider: output, usage, events, access, bad input, listing; and client-streamed
assistant messages (messageAppend / messageFinish)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import (
    RUN_CANCEL,
    RUN_CREATE,
    create_run,
    on,
    read_run,
    runs_server,
    settle,
    stream_events,
    wait_for,
)

STREAM_TYPES = ("message.delta", "message.done", "error")
CONVERSATION_RUNS = """query($c: ID!, $s: RunStatus, $f: Int, $a: String) { conversation(id: $c) {
  tokenCount messageCount runs(status: $s, first: $f, after: $a) { totalCount nodes { id status }
  pageInfo { hasNextPage endCursor } } } }"""
APPEND = "mutation($id: ID!, $d: String!) { messageAppend(id: $id, delta: $d) { id content chunks { index content } } }"
FINISH = """mutation($id: ID!, $u: UsageInput) { messageFinish(id: $id, usage: $u) {
  id content usage { promptTokens completionTokens totalTokens } } }"""


@pytest.fixture(scope="module")
def runs(dsn: str) -> Iterator[ServerThread]:
    server = runs_server(dsn, run_workers=2, echo_delay_seconds=0.0, run_max_active_per_user=100)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _settle(runs: ServerThread, loop: Loop, dsn: str) -> Iterator[None]:
    yield
    settle(loop, dsn, runs.app.state.services.settings.run_queue)


@pytest.fixture
def owner(admin: Actor, runs: ServerThread) -> Actor:
    return on(runs, admin)


@pytest.fixture
def member_of(make_user: Callable[..., Actor], runs: ServerThread) -> Callable[[Actor, str, str], Actor]:
    def make(owner: Actor, conversation_id: str, role: str = "MEMBER") -> Actor:
        user = make_user(owner, role="MEMBER")
        join(owner, user, conversation_id, role)
        return on(runs, user)

    return make


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion}


def test_an_echo_run_writes_an_assistant_reply_under_its_message_and_completes(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "hello world")
    queued = create_run(owner, root)
    # (Only the run's own fields: its steps are read when the response is built, and by then a worker
    # may have started it.)
    assert {
        k: queued[k] for k in ("status", "provider", "model", "attempt", "usage", "output", "lastError")
    } == {
        "status": "QUEUED",
        "provider": "echo",
        "model": "echo",
        "attempt": 0,
        "usage": None,
        "output": None,
        "lastError": None,
    }
    assert queued["message"] == {"id": root} and queued["conversationId"] == cid

    run = wait_for(owner, queued["id"])
    output = run["output"]
    # "echo: hello world" is 3 words: 3 completion tokens; the prompt is one 11-byte user message:
    # 3 (priming) + 4 (framing) + ceil(11 / 4) = 10 tokens.
    assert run["status"] == "COMPLETED" and run["attempt"] == 1 and run["lastError"] is None
    assert run["usage"] == _usage(10, 3)
    assert run["startedAt"] is not None and run["completedAt"] is not None
    assert run["cancelledAt"] is None and run["failedAt"] is None and run["expiredAt"] is None
    assert {k: output[k] for k in ("parentId", "role", "content", "model", "usage")} == {
        "parentId": root,
        "role": "ASSISTANT",
        "content": "echo: hello world",
        "model": "echo",
        "usage": _usage(10, 3),
    }
    assert [c["index"] for c in output["chunks"]] == list(range(len(output["chunks"])))
    assert "".join(c["content"] for c in output["chunks"]) == "echo: hello world"
    [step] = run["steps"]
    assert {
        k: step[k] for k in ("type", "status", "details", "attempt", "cancelledAt", "failedAt", "expiredAt")
    } == {
        "type": "MESSAGE_CREATION",
        "status": "COMPLETED",
        "details": {"messageId": output["id"]},
        "attempt": 1,
        "cancelledAt": None,
        "failedAt": None,
        "expiredAt": None,
    }
    assert step["completedAt"] is not None

    events = stream_events(loop, dsn, cid, STREAM_TYPES)
    assert [e["type"] for e in events] == ["message.delta"] * len(output["chunks"]) + ["message.done"]
    assert [e["payload"] for e in events[:-1]] == [
        {
            "messageId": output["id"],
            "runId": run["id"],
            "attempt": 1,
            "index": c["index"],
            "delta": c["content"],
        }
        for c in output["chunks"]
    ]
    assert events[-1]["payload"] == {"messageId": output["id"], "runId": run["id"], "usage": _usage(10, 3)}

    conversation = owner.client.ok(CONVERSATION_RUNS, {"c": cid})["conversation"]
    assert conversation["tokenCount"] == 13 and conversation["messageCount"] == 2


def test_deltas_are_coalesced_into_a_few_chunks(owner: Actor) -> None:
    cid = create_conversation(owner)
    words = " ".join(f"word{i}" for i in range(300))
    root = start_thread(owner, cid, words)
    run = wait_for(owner, create_run(owner, root)["id"])
    chunks = run["output"]["chunks"]
    assert run["output"]["content"] == f"echo: {words}"
    assert run["usage"]["completionTokens"] == 301
    # 301 deltas produced back to back are written at most every 50 ms: a handful of chunks, not 301.
    assert len(chunks) < 30


def test_usage_of_every_run_adds_up_on_the_conversation(owner: Actor) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "hello world")
    first = wait_for(owner, create_run(owner, root)["id"])
    second = wait_for(owner, create_run(owner, first["output"]["id"], instructions="Be brief.")["id"])
    # The second prompt: system "Be brief." (4 + 3), "hello world" (4 + 3), "echo: hello world" (4 + 5), + 3.
    assert second["usage"] == _usage(26, 4)
    assert second["output"]["content"] == "echo: echo: hello world"
    conversation = owner.client.ok(CONVERSATION_RUNS, {"c": cid})["conversation"]
    assert conversation["tokenCount"] == 13 + 30


def test_a_finished_run_cannot_be_cancelled(owner: Actor) -> None:
    cid = create_conversation(owner)
    run = wait_for(owner, create_run(owner, start_thread(owner, cid, "hi"))["id"])
    error = owner.client.error(RUN_CANCEL, {"id": run["id"]})
    assert error["extensions"]["code"] == "CONFLICT"
    assert error["message"] == "The run is COMPLETED, which is final"
    assert read_run(owner, run["id"])["status"] == "COMPLETED"


def test_a_second_run_on_a_message_is_allowed_once_the_first_ended(owner: Actor) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "again")
    first = wait_for(owner, create_run(owner, root)["id"])
    second = wait_for(owner, create_run(owner, root)["id"])
    assert first["status"] == second["status"] == "COMPLETED"
    assert first["output"]["id"] != second["output"]["id"]
    assert first["output"]["parentId"] == second["output"]["parentId"] == root


def test_conversation_runs_lists_newest_first_and_filters_by_status(owner: Actor) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "one")
    done = [wait_for(owner, create_run(owner, root)["id"])["id"] for _ in range(3)]
    page = owner.client.ok(CONVERSATION_RUNS, {"c": cid, "f": 2})["conversation"]["runs"]
    assert [n["id"] for n in page["nodes"]] == [done[2], done[1]]
    assert page["totalCount"] == 3 and page["pageInfo"]["hasNextPage"] is True
    rest = owner.client.ok(CONVERSATION_RUNS, {"c": cid, "f": 2, "a": page["pageInfo"]["endCursor"]})[
        "conversation"
    ]["runs"]
    assert [n["id"] for n in rest["nodes"]] == [done[0]] and rest["pageInfo"]["hasNextPage"] is False
    completed = owner.client.ok(CONVERSATION_RUNS, {"c": cid, "s": "COMPLETED"})["conversation"]["runs"]
    assert completed["totalCount"] == 3
    queued = owner.client.ok(CONVERSATION_RUNS, {"c": cid, "s": "QUEUED"})["conversation"]["runs"]
    assert queued == {"totalCount": 0, "nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}


def test_node_resolves_runs_and_run_steps(
    owner: Actor, make_tenant: Callable[..., Actor], runs: ServerThread
) -> None:
    cid = create_conversation(owner)
    run = wait_for(owner, create_run(owner, start_thread(owner, cid, "node"))["id"])
    step_id = run["steps"][0]["id"]
    query = "query($id: ID!) { node(id: $id) { id ... on Run { status } ... on RunStep { type stepStatus: status } } }"
    assert owner.client.ok(query, {"id": run["id"]})["node"] == {"id": run["id"], "status": "COMPLETED"}
    assert owner.client.ok(query, {"id": step_id})["node"] == {
        "id": step_id,
        "type": "MESSAGE_CREATION",
        "stepStatus": "COMPLETED",
    }
    stranger = on(runs, make_tenant())
    assert stranger.client.ok(query, {"id": run["id"]})["node"] is None
    assert stranger.client.ok(query, {"id": step_id})["node"] is None


def test_runs_need_write_access_and_stay_invisible_to_outsiders(
    owner: Actor, member_of: Callable[..., Actor], make_tenant: Callable[..., Actor], runs: ServerThread
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "private")
    run = wait_for(owner, create_run(owner, root)["id"])
    viewer = member_of(owner, cid, "VIEWER")
    assert viewer.client.code(RUN_CREATE, {"i": {"messageId": root}}) == "FORBIDDEN"
    assert read_run(viewer, run["id"])["status"] == "COMPLETED"
    assert viewer.client.code(RUN_CANCEL, {"id": run["id"]}) == "FORBIDDEN"
    member = member_of(owner, cid, "MEMBER")
    assert wait_for(member, create_run(member, root)["id"])["status"] == "COMPLETED"

    stranger = on(runs, make_tenant())
    assert stranger.client.code(RUN_CREATE, {"i": {"messageId": root}}) == "NOT_FOUND"
    assert stranger.client.code("query($id: ID!) { run(id: $id) { id } }", {"id": run["id"]}) == "NOT_FOUND"
    assert stranger.client.code(RUN_CANCEL, {"id": run["id"]}) == "NOT_FOUND"


@pytest.mark.parametrize(
    ("fields", "argument"),
    [
        ({"provider": "anthropic"}, "provider"),
        ({"model": "gpt-4o"}, "model"),
        ({"provider": "openai", "model": "no-such-model"}, "model"),
        ({"maxHistoryMessages": 0}, "maxHistoryMessages"),
        ({"instructions": "a\x00b"}, "instructions"),
    ],
)
def test_bad_run_input_is_refused(owner: Actor, fields: dict[str, Any], argument: str) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "bad")
    error = owner.client.error(RUN_CREATE, {"i": {"messageId": root, **fields}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["argument"] == argument
    assert owner.client.ok(CONVERSATION_RUNS, {"c": cid})["conversation"]["runs"]["totalCount"] == 0


def test_a_run_on_a_deleted_message_or_archived_conversation_conflicts(owner: Actor) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "gone")
    child = reply(owner, root, "child")
    owner.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": child})
    assert owner.client.code(RUN_CREATE, {"i": {"messageId": child}}) == "CONFLICT"
    owner.client.ok("mutation($id: ID!) { conversationArchive(id: $id) { id } }", {"id": cid})
    assert owner.client.code(RUN_CREATE, {"i": {"messageId": root}}) == "CONFLICT"
    assert owner.client.code(RUN_CREATE, {"i": {"messageId": "not-an-id"}}) == "BAD_USER_INPUT"


def test_the_conversation_defaults_choose_provider_and_model(owner: Actor) -> None:
    cid = create_conversation(owner, aiProvider="echo", model="echo")
    run = create_run(owner, start_thread(owner, cid, "defaults"))
    assert (run["provider"], run["model"]) == ("echo", "echo")
    other = create_conversation(owner, aiProvider="openai", model="gpt-4o")
    run = create_run(owner, start_thread(owner, other, "defaults"), provider="echo")
    assert (run["provider"], run["model"]) == ("echo", "echo")


# client-streamed assistant messages ----------------------------------------------------------


def test_a_client_streams_its_assistant_message_with_append_and_finish(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "question")
    message = reply(owner, root, "Hi", role="ASSISTANT")
    assert owner.client.ok(APPEND, {"id": message, "d": " there"})["messageAppend"] == {
        "id": message,
        "content": "Hi there",
        "chunks": [{"index": 0, "content": " there"}],
    }
    owner.client.ok(APPEND, {"id": message, "d": "!"})
    finished = owner.client.ok(FINISH, {"id": message, "u": {"promptTokens": 5, "completionTokens": 2}})[
        "messageFinish"
    ]
    assert finished == {"id": message, "content": "Hi there!", "usage": _usage(5, 2)}
    assert owner.client.ok(CONVERSATION_RUNS, {"c": cid})["conversation"]["tokenCount"] == 7
    assert [e["payload"] for e in stream_events(loop, dsn, cid, STREAM_TYPES)] == [
        {"messageId": message, "runId": None, "attempt": 1, "index": 0, "delta": " there"},
        {"messageId": message, "runId": None, "attempt": 1, "index": 1, "delta": "!"},
        {"messageId": message, "runId": None, "usage": _usage(5, 2)},
    ]
    assert owner.client.code(APPEND, {"id": message, "d": "more"}) == "CONFLICT"
    assert owner.client.code(FINISH, {"id": message}) == "CONFLICT"


def test_only_the_author_of_an_assistant_message_streams_into_it(
    owner: Actor, member_of: Callable[..., Actor]
) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "question")
    message = reply(owner, root, "Hi", role="ASSISTANT")
    member = member_of(owner, cid, "MEMBER")
    viewer = member_of(owner, cid, "VIEWER")
    assert member.client.code(APPEND, {"id": message, "d": "x"}) == "FORBIDDEN"
    assert viewer.client.code(APPEND, {"id": message, "d": "x"}) == "FORBIDDEN"
    assert member.client.code(FINISH, {"id": message}) == "FORBIDDEN"
    assert owner.client.code(APPEND, {"id": root, "d": "x"}) == "BAD_USER_INPUT"
    assert owner.client.code(APPEND, {"id": message, "d": ""}) == "BAD_USER_INPUT"
    run = wait_for(owner, create_run(owner, root)["id"])
    assert owner.client.code(APPEND, {"id": run["output"]["id"], "d": "x"}) == "FORBIDDEN"


def test_erasing_a_user_erases_their_runs_instructions(
    owner: Actor, member_of: Callable[[Actor, str, str], Actor]
) -> None:
    """userErase (redactMessages, the default) empties the text of the erased user's messages; the instructions
    they gave their runs are their words too and go as well (they stayed readable in `Run.instructions`). With
    redactMessages: false both stay, attributed to the placeholder."""
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "hello world")
    erased, kept = member_of(owner, cid, "MEMBER"), member_of(owner, cid, "MEMBER")
    first = wait_for(owner, create_run(erased, root, instructions="my secret instructions")["id"])
    second = wait_for(owner, create_run(kept, first["output"]["id"], instructions="kept instructions")["id"])
    erase = "mutation($u: ID!, $r: Boolean!) { userErase(userId: $u, redactMessages: $r) { userId } }"
    owner.client.ok(erase, {"u": erased.user_id, "r": True})
    owner.client.ok(erase, {"u": kept.user_id, "r": False})
    assert read_run(owner, first["id"])["instructions"] is None
    assert read_run(owner, second["id"])["instructions"] == "kept instructions"


def test_run_messages_count_against_the_responses_message_limit(owner: Actor, dsn: str) -> None:
    """`Run.message` and `Run.output` are messages a response returns: they count against
    THREADLINE_QUERY_MAX_MESSAGES like any other (nothing counted them: `conversations { runs { output } }` read
    every run's output before the final size check)."""
    from tests.harness import test_settings

    cid = create_conversation(owner)
    for n in range(3):
        wait_for(owner, create_run(owner, start_thread(owner, cid, f"question {n}"))["id"])
    small = ServerThread(test_settings(dsn, migrate_on_start=False, query_max_messages=4, run_workers=0))
    small.start()
    try:
        reader = on(small, owner)
        query = "query($c: ID!) { conversation(id: $c) { runs(first: 10) { nodes { %s } } } }"
        assert (
            len(reader.client.ok(query % "output { id }", {"c": cid})["conversation"]["runs"]["nodes"]) == 3
        )
        error = reader.client.error(query % "message { id } output { content }", {"c": cid})
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["limitName"] == "messages", error
    finally:
        small.stop()
