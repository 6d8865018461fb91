"""Runs on a server whose workers are off: they stay QUEUED, so queue-side rules can be observed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, ServerThread
from tests.test_runs_support import RUN_CANCEL, RUN_CREATE, create_run, on, read_run, runs_server

CAP = 5
RUNS = """query($c: ID!, $s: RunStatus) { conversation(id: $c) { runs(status: $s) { totalCount nodes { id } } } }"""


@pytest.fixture(scope="module")
def queue(dsn: str) -> Iterator[ServerThread]:
    server = runs_server(dsn, run_workers=0, run_max_active_per_user=CAP)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def owner(admin: Actor, queue: ServerThread) -> Actor:
    return on(queue, admin)


def test_a_queued_run_is_cancelled_at_once_and_stays_cancelled(owner: Actor) -> None:
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, "wait"))
    cancelled = owner.client.ok(RUN_CANCEL, {"id": run["id"]})["runCancel"]
    assert cancelled["status"] == "CANCELLED" and cancelled["cancelledAt"] is not None
    assert cancelled["startedAt"] is None and cancelled["output"] is None and cancelled["steps"] == []
    assert cancelled["usage"] == {"promptTokens": 0, "completionTokens": 0, "totalTokens": 0}
    error = owner.client.error(RUN_CANCEL, {"id": run["id"]})
    assert (
        error["extensions"]["code"] == "CONFLICT"
        and error["message"] == "The run is CANCELLED, which is final"
    )
    assert read_run(owner, run["id"])["status"] == "CANCELLED"


def test_a_second_active_run_on_the_same_message_conflicts(owner: Actor) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "one")
    first = create_run(owner, root)
    error = owner.client.error(RUN_CREATE, {"i": {"messageId": root}})
    assert error["extensions"]["code"] == "CONFLICT"
    assert error["message"] == "The message already has an active run; cancel it or wait for it to end"
    other = create_run(owner, start_thread(owner, cid, "two"))
    owner.client.ok(RUN_CANCEL, {"id": first["id"]})
    again = create_run(owner, root)
    assert again["status"] == "QUEUED"
    assert owner.client.ok(RUNS, {"c": cid, "s": "QUEUED"})["conversation"]["runs"] == {
        "totalCount": 2,
        "nodes": [{"id": again["id"]}, {"id": other["id"]}],
    }
    assert owner.client.ok(RUNS, {"c": cid, "s": "CANCELLED"})["conversation"]["runs"]["nodes"] == [
        {"id": first["id"]}
    ]


def test_active_runs_per_user_are_capped_even_when_created_at_once(
    owner: Actor, make_user: Callable[..., Actor], queue: ServerThread
) -> None:
    cid = create_conversation(owner)
    messages = [start_thread(owner, cid, f"m{i}") for i in range(100)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def create(message_id: str) -> None:
        body = owner.client.execute(RUN_CREATE, {"i": {"messageId": message_id}})
        with lock:
            results.append(body)

    threads = [threading.Thread(target=create, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [r for r in results if not r.get("errors")]
    refused = [r["errors"][0]["extensions"] for r in results if r.get("errors")]
    assert len(created) == CAP
    assert refused == [{"code": "RATE_LIMITED", "retryAfter": 1, "limit": CAP}] * (100 - CAP)
    assert owner.client.ok(RUNS, {"c": cid, "s": "QUEUED"})["conversation"]["runs"]["totalCount"] == CAP

    # Ending a run frees one of the owner's places; another user has places of their own.
    busy = {r["data"]["runCreate"]["message"]["id"] for r in created}
    free = [m for m in messages if m not in busy]
    owner.client.ok(RUN_CANCEL, {"id": created[0]["data"]["runCreate"]["id"]})
    assert create_run(owner, free[0])["status"] == "QUEUED"
    assert owner.client.code(RUN_CREATE, {"i": {"messageId": free[1]}}) == "RATE_LIMITED"
    member = on(queue, make_user(owner))
    join(owner, member, cid)
    assert create_run(member, free[1])["status"] == "QUEUED"


def test_a_queued_run_whose_creator_lost_write_access_fails_forbidden_when_taken(
    dsn: str, owner: Actor, make_user: Callable[..., Actor], queue: ServerThread
) -> None:
    """Credentials are live: runs queued by a member who was then removed, or made a viewer, fail FORBIDDEN when a
    worker takes them, and write nothing in the conversation; a member who kept their access gets an answer."""
    from tests.harness import test_settings
    from tests.test_runs_support import wait_for

    cid = create_conversation(owner)
    members = {}
    for name in ("removed", "viewer", "kept"):
        user = make_user(owner, role="MEMBER")
        join(owner, user, cid)
        members[name] = on(queue, user)
    runs = {name: create_run(actor, start_thread(actor, cid, name))["id"] for name, actor in members.items()}
    owner.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }",
        {"c": cid, "u": members["removed"].user_id},
    )
    owner.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRoleSet(conversationId: $c, userId: $u, role: VIEWER) { role } }",
        {"c": cid, "u": members["viewer"].user_id},
    )
    settings = queue.app.state.services.settings
    worker = ServerThread(
        test_settings(dsn, migrate_on_start=False, run_queue=settings.run_queue, run_workers=1)
    )
    worker.start()
    try:
        ended = {name: wait_for(owner, run_id) for name, run_id in runs.items()}
    finally:
        worker.stop()
    for name in ("removed", "viewer"):
        assert ended[name]["status"] == "FAILED", ended[name]
        assert ended[name]["lastError"]["code"] == "FORBIDDEN", ended[name]
        assert ended[name]["output"] is None, ended[name]
    assert ended["kept"]["status"] == "COMPLETED", ended["kept"]
