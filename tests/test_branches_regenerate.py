"""Regenerate and edit-and-resend (issue 16 item 2): `runCreate(regenerate: true)` makes sibling answers and
`messageEdit(asBranch: true)` a sibling question, the earlier ones stay reachable, and the context a run sends
is exactly its branch (root -> the message answered), asserted against a fake OpenAI-compatible provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import FakeOpenAI, create_run, fake_openai, on, runs_server, settle, wait_for

TREE = """query($r: ID!) { threadTree(rootId: $r) { nodes { id parentId role content siblingIndex siblingCount } } }"""
CURRENT = "query($r: ID!) { thread(rootId: $r) { currentLeaf { id } currentPath { content } } }"
EDIT = """mutation($m: ID!, $x: String!, $b: Boolean!) { messageEdit(id: $m, content: $x, asBranch: $b) {
  id parentId role content siblingIndex siblingCount edits { content } } }"""
MESSAGE = "query($m: ID!) { message(id: $m) { content editedAt edits { content } childCount } }"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    yield from fake_openai()


@pytest.fixture(scope="module")
def runs(dsn: str, fake: FakeOpenAI) -> Iterator[ServerThread]:
    server = runs_server(
        dsn,
        run_workers=2,
        run_timeout_seconds=10.0,
        run_max_active_per_user=100,
        openai_base_url=fake.base_url,
        openai_api_key="sk-test",
        openai_models=FakeOpenAI.MODELS,
        openai_default_model="fake-ok",
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


def _conversation(owner: Actor) -> tuple[str, list[str]]:
    """root (USER) -> answer (ASSISTANT) -> question (USER), plus a side branch under the root."""
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "first question")
    answer = reply(owner, root, "first answer", role="ASSISTANT")
    reply(owner, root, "a side branch")  # never part of the context below
    question = reply(owner, answer, "second question")
    return root, [root, answer, question]


BRANCH = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
]


def _nodes(actor: Actor, root: str) -> list[dict[str, object]]:
    return actor.client.ok(TREE, {"r": root})["threadTree"]["nodes"]  # type: ignore[no-any-return]


def test_regenerating_three_times_gives_three_sibling_answers_each_sent_the_branch_only(
    owner: Actor, fake: FakeOpenAI
) -> None:
    root, (_, answer, question) = _conversation(owner)
    first = wait_for(owner, create_run(owner, question, provider="openai", model="fake-ok")["id"])
    answers = [first["output"]["id"]]
    # Regenerate from the question, then from an answer (its question is answered again), then again.
    for target in (question, answers[0], question):
        run = wait_for(
            owner, create_run(owner, target, provider="openai", model="fake-ok", regenerate=True)["id"]
        )
        assert run["status"] == "COMPLETED" and run["message"]["id"] == question
        assert run["output"]["parentId"] == question
        answers.append(run["output"]["id"])

    under_question = [n for n in _nodes(owner, root) if n["parentId"] == question]
    assert [(n["id"], n["role"], n["content"]) for n in under_question] == [
        (a, "ASSISTANT", "Hello there!") for a in answers
    ]
    assert [(n["siblingIndex"], n["siblingCount"]) for n in under_question] == [(i, 4) for i in range(4)]
    # Nothing was ever answered under an answer (no second child chain).
    assert not [n for n in _nodes(owner, root) if n["parentId"] in answers]
    # Every request carried exactly the branch root -> question: no sibling answer, no side branch.
    assert [r["messages"] for r in fake.requests_for("fake-ok")] == [BRANCH] * 4
    # The run's creator is on the newest answer.
    current = owner.client.ok(CURRENT, {"r": root})["thread"]
    assert current["currentLeaf"] == {"id": answers[-1]}
    assert [m["content"] for m in current["currentPath"]] == [
        "first question", "first answer", "second question", "Hello there!",
    ]  # fmt: skip
    assert answer != question


def test_regenerating_an_answer_that_starts_its_thread_is_bad_input(owner: Actor, fake: FakeOpenAI) -> None:
    cid = create_conversation(owner)
    root = start_thread(owner, cid, "an answer with no question", role="ASSISTANT")
    error = owner.client.error(
        "mutation($i: RunCreateInput!) { runCreate(input: $i) { id } }",
        {"i": {"messageId": root, "provider": "openai", "model": "fake-ok", "regenerate": True}},
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "regenerate"
    assert fake.requests_for("fake-ok") == []


def test_edit_as_branch_adds_a_sibling_question_and_keeps_the_earlier_one_and_its_answers(
    owner: Actor, fake: FakeOpenAI
) -> None:
    root, (_, answer, question) = _conversation(owner)
    old_answer = reply(owner, question, "the old answer", role="ASSISTANT")
    edited = owner.client.ok(EDIT, {"m": question, "x": "second question, reworded", "b": True})[
        "messageEdit"
    ]
    assert edited["id"] != question
    assert {
        k: edited[k] for k in ("parentId", "role", "content", "siblingIndex", "siblingCount", "edits")
    } == {
        "parentId": answer,
        "role": "USER",
        "content": "second question, reworded",
        "siblingIndex": 1,
        "siblingCount": 2,
        "edits": [],
    }
    # The earlier question is untouched and its answer still under it.
    assert owner.client.ok(MESSAGE, {"m": question})["message"] == {
        "content": "second question",
        "editedAt": None,
        "edits": [],
        "childCount": 1,
    }
    assert [n["id"] for n in _nodes(owner, root) if n["parentId"] == question] == [old_answer]
    current = owner.client.ok(CURRENT, {"r": root})["thread"]
    assert current["currentLeaf"] == {"id": edited["id"]}
    # Answering the new question sends its branch, not the earlier question nor its answer.
    run = wait_for(owner, create_run(owner, edited["id"], provider="openai", model="fake-ok")["id"])
    assert run["status"] == "COMPLETED"
    assert [r["messages"] for r in fake.requests_for("fake-ok")] == [
        [*BRANCH[:2], {"role": "user", "content": "second question, reworded"}]
    ]
    # Without asBranch the edit rewrites in place, as before.
    in_place = owner.client.ok(EDIT, {"m": question, "x": "rewritten", "b": False})["messageEdit"]
    assert (in_place["id"], in_place["content"], in_place["edits"]) == (
        question,
        "rewritten",
        [{"content": "second question"}],
    )


def test_edit_as_branch_refuses_a_root_a_non_author_and_a_deleted_message(
    owner: Actor, admin: Actor, make_user: Callable[..., Actor], runs: ServerThread
) -> None:
    member = on(runs, make_user(admin))
    cid = create_conversation(owner)
    join(owner, member, cid)
    root = start_thread(owner, cid, "root")
    question = reply(owner, root, "question")
    error = owner.client.error(EDIT, {"m": root, "x": "new root", "b": True})
    assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "asBranch")
    assert member.client.code(EDIT, {"m": question, "x": "not mine", "b": True}) == "FORBIDDEN"
    assert owner.client.code(EDIT, {"m": question, "x": "", "b": True}) == "BAD_USER_INPUT"
    owner.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": question})
    assert owner.client.code(EDIT, {"m": question, "x": "again", "b": True}) == "CONFLICT"
    assert [n["id"] for n in _nodes(owner, root)] == [root, question]
