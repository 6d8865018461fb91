"""`Run.stepConnection` pages through a run's steps (a long agent run has thousands); the deprecated `Run.steps` list
returns at most the first THREADLINE_PAGE_SIZE_MAX; both are charged to the operation's response budget, so the
steps of many runs, multiplied by aliases, are refused rather than read.

The steps are written straight into `run_step` (a run of thousands of tool rounds would take minutes to play); the
runs, and everything asserted, go through the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import create_run, on, runs_server
from threadline.ids import Kind, decode_id, encode_id

BUDGET = 500_000  # THREADLINE_RESPONSE_MAX_BYTES of the server here
PAGE = """query($r: ID!, $f: Int, $a: String) { run(id: $r) {
  stepConnection(first: $f, after: $a) {
    totalCount edges { cursor node { id type status attempt details } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"""
STEPS = "query($r: ID!) { run(id: $r) { steps { id details } } }"


@pytest.fixture(scope="module")
def runs(dsn: str) -> Iterator[ServerThread]:
    server = runs_server(dsn, run_workers=0, run_max_active_per_user=100, response_max_bytes=BUDGET)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def owner(admin: Actor, runs: ServerThread) -> Actor:
    return on(runs, admin)


def add_steps(loop: Loop, dsn: str, run_id: str, count: int) -> list[str]:
    """`count` completed TOOL_CALLS steps of the run, two at each instant (ties go by id); their ids oldest first."""

    async def write() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            run = decode_id(run_id, Kind.RUN)
            await conn.execute(
                """INSERT INTO run_step (id, tenant_id, run_id, attempt, type, status, details, created_at)
                   SELECT gen_random_uuid(), r.tenant_id, r.id, 1, 'TOOL_CALLS', 'COMPLETED',
                          jsonb_build_object('n', g), r.created_at + (g / 2) * interval '1 millisecond'
                   FROM run r, generate_series(0, $2 - 1) AS g WHERE r.id = $1""",
                run,
                count,
            )
            rows = await conn.fetch("SELECT id FROM run_step WHERE run_id = $1 ORDER BY created_at, id", run)
            return [encode_id(Kind.RUN_STEP, r["id"]) for r in rows]
        finally:
            await conn.close()

    return loop.run(write())


def queued_runs(owner: Actor, count: int) -> tuple[str, list[str]]:
    """A conversation with `count` queued runs (no worker takes them here), newest first as `runs` lists them."""
    cid = create_conversation(owner)
    made = [create_run(owner, start_thread(owner, cid, f"q{i}"))["id"] for i in range(count)]
    return cid, made[::-1]


def test_a_run_s_steps_are_paged_oldest_first_with_first_and_after(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    _, (run_id,) = queued_runs(owner, 1)
    expected = add_steps(loop, dsn, run_id, 250)

    default = owner.client.ok(PAGE, {"r": run_id})["run"]["stepConnection"]
    assert [e["node"]["id"] for e in default["edges"]] == expected[:20]

    seen: list[str] = []
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        page = owner.client.ok(PAGE, {"r": run_id, "f": 100, "a": after})["run"]["stepConnection"]
        pages.append(page["pageInfo"])
        seen += [e["node"]["id"] for e in page["edges"]]
        assert page["totalCount"] == 250
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected
    assert [(p["hasNextPage"], p["hasPreviousPage"]) for p in pages] == [
        (True, False),
        (True, True),
        (False, True),
    ]
    first = owner.client.ok(PAGE, {"r": run_id, "f": 2})["run"]["stepConnection"]
    nodes = [e["node"] for e in first["edges"]]
    assert [(n["id"], n["type"], n["status"], n["attempt"]) for n in nodes] == [
        (expected[0], "TOOL_CALLS", "COMPLETED", 1),
        (expected[1], "TOOL_CALLS", "COMPLETED", 1),
    ]
    assert sorted(n["details"]["n"] for n in nodes) == [0, 1]  # written at one instant: ordered by id
    assert first["pageInfo"]["startCursor"] == first["edges"][0]["cursor"]
    assert first["pageInfo"]["endCursor"] == first["edges"][1]["cursor"]
    # A page past the end is empty, and says so.
    last = owner.client.ok(PAGE, {"r": run_id, "f": 5, "a": pages[-1]["endCursor"]})["run"]["stepConnection"]
    assert last["edges"] == [] and last["pageInfo"]["hasNextPage"] is False
    assert last["pageInfo"]["startCursor"] is None and last["pageInfo"]["endCursor"] is None


def test_the_deprecated_steps_list_returns_the_first_page_size_max_steps(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    _, (run_id,) = queued_runs(owner, 1)
    expected = add_steps(loop, dsn, run_id, 250)
    steps = owner.client.ok(STEPS, {"r": run_id})["run"]["steps"]
    assert [s["id"] for s in steps] == expected[:100]
    assert sorted(s["details"]["n"] for s in steps) == list(range(100))  # two steps share each instant
    _, (empty,) = queued_runs(owner, 1)
    assert owner.client.ok(STEPS, {"r": empty})["run"]["steps"] == []
    field = owner.client.ok(
        """{ __type(name: "Run") { fields(includeDeprecated: true) { name isDeprecated deprecationReason } } }"""
    )["__type"]["fields"]
    (steps_field,) = [f for f in field if f["name"] == "steps"]
    assert steps_field["isDeprecated"] is True
    assert "stepConnection" in steps_field["deprecationReason"]


@pytest.mark.parametrize(
    ("first", "after", "argument"),
    [(101, None, "first"), (-1, None, "first"), (5, "not a cursor", "after"), (5, "WyJ4Il0", "after")],
)
def test_step_page_bounds_and_bad_cursors_are_bad_user_input(
    owner: Actor, first: int, after: str | None, argument: str
) -> None:
    _, (run_id,) = queued_runs(owner, 1)
    error = owner.client.error(PAGE, {"r": run_id, "f": first, "a": after})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert argument in error["message"]
    if first > 100:
        assert error["extensions"]["limit"] == 100


def test_steps_of_many_runs_across_aliases_are_refused_by_the_response_budget(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    cid, run_ids = queued_runs(owner, 10)
    for run_id in run_ids:
        add_steps(loop, dsn, run_id, 100)
    # One conversation's ten runs with all their steps: 1,000 steps, within the budget.
    for selection in ("steps { id }", "stepConnection(first: 100) { nodes { id } }"):
        page = f"runs(first: 10) {{ nodes {{ {selection} }} }}"
        one = owner.client.ok("query($c: ID!) { conversation(id: $c) { " + page + " } }", {"c": cid})
        nodes = one["conversation"]["runs"]["nodes"]
        assert (
            sum(len(n["steps"]) if "steps" in n else len(n["stepConnection"]["nodes"]) for n in nodes)
            == 1_000
        )
        # Three aliases of it would return 3,000 steps (about 135 KB of ids, 900 KB counted as whole steps):
        # refused before they are read, whichever field asks.
        aliased = " ".join(f"a{i}: conversation(id: $c) {{ {page} }}" for i in range(3))
        error = owner.client.error("query($c: ID!) { " + aliased + " }", {"c": cid})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert (error["extensions"]["limitName"], error["extensions"]["limit"]) == ("responseBytes", BUDGET)

    # Pages of steps under pages of runs under pages of conversations are priced before anything runs.
    deep = """{ conversations(first: 100) { nodes { runs(first: 100) { nodes {
        stepConnection(first: 100) { nodes { id } } } } } } }"""
    error = owner.client.error(deep)
    assert (error["extensions"]["code"], error["extensions"]["limitName"]) == ("BAD_USER_INPUT", "cost")


def test_the_steps_of_every_run_of_a_page_are_read_in_a_fixed_number_of_statements(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    query = """query($c: ID!) { conversation(id: $c) { runs(first: 20) { nodes {
        stepConnection(first: 3) { totalCount nodes { id } } steps { id } } } } }"""
    counts = []
    for runs in (1, 12):
        cid, run_ids = queued_runs(owner, runs)
        for run_id in run_ids:
            add_steps(loop, dsn, run_id, 5)
        counts.append(owner.client.statements(query, {"c": cid}))
    assert counts[0] == counts[1]


def test_another_tenant_s_run_steps_are_not_found(
    owner: Actor, make_tenant: Any, runs: ServerThread, loop: Loop, dsn: str
) -> None:
    _, (run_id,) = queued_runs(owner, 1)
    add_steps(loop, dsn, run_id, 3)
    stranger = on(runs, make_tenant())
    error = stranger.client.error(PAGE, {"r": run_id})
    assert error["extensions"]["code"] == "NOT_FOUND"
