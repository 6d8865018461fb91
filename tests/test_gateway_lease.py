"""The leases of /v1 calls in progress (`gateway_call`) beyond the tenant's cap (tests/test_gateway_run_cap.py): a
renewal rewrites them in place (HOT: no index holds `expires_at`), a call its budgets refuse writes none, and they
make THREADLINE_RUN_MAX_ACTIVE_PER_USER hold across every process, counting a user's /v1 calls with their runs.

Calls are held by the gate of tests/test_gateway_run_cap.py's fake model: they last exactly as long as a test
decides, never by timing.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_gateway_run_cap import MODEL, PROVIDER, Held, HeldUpstream, complete, dying_server
from tests.test_runs_support import RUN_CANCEL, on, runs_server
from threadline.gateway import repository as gateway_repo

USER_CAP = 1
USER_SETTING = "THREADLINE_RUN_MAX_ACTIVE_PER_USER"


@pytest.fixture(scope="module")
def upstream() -> Iterator[HeldUpstream]:
    found = HeldUpstream()
    yield found
    found.close()


@pytest.fixture(scope="module")
def api(dsn: str, upstream: HeldUpstream) -> Iterator[ServerThread]:
    """A user may have one run or /v1 call in progress; a tenant ten; no workers (a run created stays queued, and
    active)."""
    with serving(dsn, upstream) as server:
        yield server


@contextlib.contextmanager
def serving(dsn: str, upstream: HeldUpstream, **settings: Any) -> Iterator[ServerThread]:
    server = runs_server(
        dsn,
        **{
            "run_workers": 0,
            "run_max_active_per_user": USER_CAP,
            "run_max_executing_per_tenant": 10,
            "run_stale_seconds": 600.0,
            "run_recovery_seconds": 0,
            "openai_base_url": upstream.base_url,
            **PROVIDER,
            **settings,
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def held(upstream: HeldUpstream) -> Iterator[Callable[[str, Actor, str], Held]]:
    calls: list[Held] = []

    def start(url: str, actor: Actor, text: str) -> Held:
        call = Held(url, actor, text)
        calls.append(call)
        return call

    upstream.reset()
    yield start
    for call in calls:
        upstream.open(call.text)
        call.close()


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def assert_over_the_user_cap(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded", error
    assert USER_SETTING in error["message"] and "across every server" in error["message"], error


def test_a_lease_renewal_is_a_hot_update(
    api: ServerThread,
    admin: Actor,
    make_user: Callable[..., Actor],
    held: Callable[..., Held],
    loop: Loop,
    dsn: str,
) -> None:
    """Every process renews each lease it holds on every beat: with `expires_at` in both indexes, no renewal was a
    HOT update, and each wrote a new entry in both indexes per call in progress."""
    users = [admin, make_user(admin), make_user(admin)]
    for i, user in enumerate(users):
        held(api.url, on(api, user), f"renewed {i}")
    indexes = loop.run(_fetch(dsn, "SELECT indexdef FROM pg_indexes WHERE tablename = 'gateway_call'"))
    assert indexes and not [r for r in indexes if "expires_at" in r["indexdef"]], indexes

    async def renew() -> tuple[int, int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            leases = [
                (r["tenant_id"], r["id"]) for r in await conn.fetch("SELECT tenant_id, id FROM gateway_call")
            ]
            async with conn.transaction():
                await gateway_repo.renew_call_places(conn, leases, 600.0)
                # this transaction's own counts: exact, whatever other sessions do
                row = await conn.fetchrow(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'gateway_call'"
                )
            assert row is not None
            return len(leases), int(row["n_tup_upd"]), int(row["n_tup_hot_upd"])
        finally:
            await conn.close()

    leases, updated, hot = loop.run(renew())
    assert (leases, updated, hot) == (3, 3, 3)


def test_a_call_its_budgets_refuse_writes_no_lease(
    upstream: HeldUpstream, make_tenant: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    """A call refused by its `runs` budget took a place and gave it back: two write transactions for nothing.
    The budgets are drawn first now; every lease written (a trigger records them) is a call's that was answered."""
    caller = make_tenant()
    record = f"gateway_call_written_{uuid.uuid4().hex[:8]}"
    loop.run(
        _execute(
            dsn,
            f"""CREATE TABLE {record} (tenant_id uuid);
                CREATE FUNCTION {record}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO {record} VALUES (NEW.tenant_id); RETURN NULL; END $$;
                CREATE TRIGGER {record} AFTER INSERT ON gateway_call FOR EACH ROW EXECUTE FUNCTION {record}()""",
        )
    )
    try:
        statuses = []
        with serving(dsn, upstream, rate_limit_runs=2) as api:  # two `runs` a minute per user
            for _ in range(5):  # two answered, three refused by the budget
                response = complete(api, caller)
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert response.json()["error"]["code"] == "rate_limit_exceeded"
                    assert USER_SETTING not in response.json()["error"]["message"]
        assert statuses == [200, 200, 429, 429, 429], statuses
        written = loop.run(_fetch(dsn, f"SELECT count(*) AS n FROM {record}"))  # no other call meanwhile
        assert written[0]["n"] == 2
    finally:
        loop.run(
            _execute(
                dsn, f"DROP TRIGGER {record} ON gateway_call; DROP FUNCTION {record}(); DROP TABLE {record}"
            )
        )


def test_a_user_s_v1_calls_count_toward_their_cap_in_every_process_and_with_their_runs(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
    make_user: Callable[..., Actor],
    held: Callable[..., Held],
    dsn: str,
) -> None:
    """THREADLINE_RUN_MAX_ACTIVE_PER_USER counted a user's /v1 calls per process, and runCreate did not count them:
    a user had the cap in every server, and the cap again in runs."""
    user, colleague = on(api, make_user(admin)), on(api, make_user(admin))
    with dying_server(
        dsn, upstream, **{USER_SETTING: str(USER_CAP), "THREADLINE_RUN_MAX_EXECUTING_PER_TENANT": "10"}
    ) as (
        elsewhere,
        _,
    ):
        call = held(elsewhere, user, "held elsewhere")  # in progress in the other process
        assert_over_the_user_cap(complete(api, user))  # echo: answered at once, were it admitted
        assert complete(api, colleague).status_code == 200  # another user is not affected

        message = start_thread(user, create_conversation(user), "a run")
        refused = user.client.execute(
            "mutation($i: RunCreateInput!) { runCreate(input: $i) { id } }",
            {"i": {"messageId": message, "provider": "openai", "model": MODEL}},
        )
        assert "errors" in refused, refused  # the call in the other process counts toward the user's runs too
        assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED", refused
        assert "/v1 completions in progress" in refused["errors"][0]["message"]

        upstream.open(call.text)
        assert call.finish()[-1] == "[DONE]"

    # The call gave its place back (in the other process, just after its answer): the run is admitted, and while
    # it is active (queued) it holds the user's place against their /v1 calls.
    deadline = time.monotonic() + 20
    while "errors" in (
        created := user.client.execute(
            "mutation($i: RunCreateInput!) { runCreate(input: $i) { id } }",
            {"i": {"messageId": message, "provider": "openai", "model": MODEL}},
        )
    ):
        assert time.monotonic() < deadline, created
        time.sleep(0.05)
    run_id = created["data"]["runCreate"]["id"]
    assert_over_the_user_cap(complete(api, user))
    user.client.ok(RUN_CANCEL, {"id": run_id})
    assert complete(api, user).status_code == 200
