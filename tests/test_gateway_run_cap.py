"""THREADLINE_RUN_MAX_EXECUTING_PER_TENANT holds across both ways a tenant puts a model to work: its runs executing
and its completions in progress through the gateway (/v1) are one number with one cap, across every process. A /v1
call past it is a 429 rate_limit_exceeded with Retry-After (never a wait); a run past it stays queued until a place
frees; another tenant is not affected; a call gives its place back however it ends (its client gone midway, its
model failing) and a place held by a process that died lapses with its lease.

Both the gateway and the runs ask a fake OpenAI-compatible endpoint that sends the first delta of a completion at
once and holds the rest until the test opens the gate of the prompt's last message: a call or run holds its place
for exactly as long as the test decides, never by timing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Client, Loop, ServerThread, free_port
from tests.test_run_fairness import GatedUpstream
from tests.test_runs_support import create_run, on, read_run, runs_server, settle, wait_for
from threadline.runs import repository as runs_repo

CAP = 2
MODEL = "gate"
SETTING = "THREADLINE_RUN_MAX_EXECUTING_PER_TENANT"


class HeldUpstream(GatedUpstream):
    """POST /v1/chat/completions: the first delta at once, the rest once the gate of the last message's text is
    open (`open`); a text starting with `fail` gets an error event instead, one starting with `tick` a delta every
    0.1 s while it waits. Records the texts that arrived."""

    def answer(self, handler: BaseHTTPRequestHandler, text: str) -> None:
        with self._lock:
            self.arrived.append(text)

        def send(chunk: dict[str, Any] | str) -> None:
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            handler.wfile.write(f"data: {data}\n\n".encode())
            handler.wfile.flush()

        def delta(content: str | None, finish: str | None = None) -> dict[str, Any]:
            d = {} if content is None else {"content": content}
            return {
                "id": "chatcmpl-held",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": MODEL,
                "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}],
            }

        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        send(delta("first "))
        gate = self._gate(text)
        while not gate.is_set() and not self.closing.is_set():
            gate.wait(0.1)
            if text.startswith("tick"):
                send(delta("."))
        if text.startswith("fail"):
            send({"error": {"message": "the model broke", "type": "server_error"}})
            return
        send(delta("done"))
        send(delta(None, "stop"))
        send({"object": "chat.completion.chunk", "choices": [], "usage": USAGE})
        send("[DONE]")


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
PROVIDER: dict[str, Any] = {
    "openai_api_key": "sk-test",
    "openai_models": (MODEL,),
    "openai_default_model": MODEL,
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[HeldUpstream]:
    found = HeldUpstream()
    yield found
    found.close()


@pytest.fixture(scope="module")
def api(dsn: str, upstream: HeldUpstream) -> Iterator[ServerThread]:
    """The gateway and the workers of its own queue (more worker slots than the cap: the cap is what binds)."""
    server = runs_server(
        dsn,
        run_workers=CAP + 2,
        run_max_executing_per_tenant=CAP,
        run_poll_seconds=0.2,
        # A place comes back when its call ends, never because its lease lapsed within a test.
        run_stale_seconds=600.0,
        run_recovery_seconds=0,
        echo_delay_seconds=0.0,
        openai_base_url=upstream.base_url,
        **PROVIDER,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(upstream: HeldUpstream, api: ServerThread, loop: Loop, dsn: str) -> Iterator[None]:
    upstream.reset()
    yield
    upstream.closing.set()  # every held call and run ends: nothing executes into the next test's truncation
    settle(loop, dsn, str(api.app.state.services.settings.run_queue))
    upstream.closing.clear()


class Refused(Exception):
    pass


class Held:
    """A streamed /v1 call whose answer has begun (its first delta read) and is held by the upstream's gate
    (Refused when the call was a 429)."""

    def __init__(self, url: str, actor: Actor, text: str) -> None:
        self.text = text
        self.client = httpx.Client(timeout=30)
        self.stack = contextlib.ExitStack()
        self.response = self.stack.enter_context(
            self.client.stream(
                "POST",
                f"{url}/v1/chat/completions",
                json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": text}]},
                headers={"Authorization": f"Bearer {actor.api_key}"},
            )
        )
        if self.response.status_code == 429:
            self.close()
            raise Refused
        assert self.response.status_code == 200, self.response.read()
        self.lines = self.response.iter_lines()
        first = next(line for line in self.lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "first "

    def finish(self) -> list[str]:
        """The rest of the stream's data lines, once it ends."""
        rest = [line[6:] for line in self.lines if line.startswith("data: ")]
        self.close()
        return rest

    def close(self) -> None:
        """Leaves: the connection is closed midway (or after the end)."""
        self.stack.close()
        self.client.close()


@pytest.fixture
def hold(api: ServerThread, upstream: HeldUpstream) -> Iterator[Callable[..., Held]]:
    """Starts a held call on `url` (the api server's by default), retried while it is refused for up to `wait`
    seconds (a place is given back just after its call ends)."""
    held: list[Held] = []

    def start(actor: Actor, text: str, url: str = api.url, wait: float = 0.0) -> Held:
        deadline = time.monotonic() + wait
        while True:
            try:
                call = Held(url, actor, text)
                break
            except Refused:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        held.append(call)
        return call

    yield start
    for call in held:
        upstream.open(call.text)
        call.close()


def complete(server: ServerThread, actor: Actor, model: str = "echo") -> httpx.Response:
    """A non-streamed /v1 call (the echo model answers at once)."""
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "one more"}]},
        headers={"Authorization": f"Bearer {actor.api_key}"},
        timeout=30,
    )


def assert_over_the_cap(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert (error["type"], error["code"], error["param"]) == ("rate_limit_error", "rate_limit_exceeded", None)
    assert SETTING in error["message"] and f"({CAP})" in error["message"], error
    assert "runs in progress and its /v1 completions in progress count together" in error["message"]
    assert int(response.headers["Retry-After"]) >= 1


def admitted_when_a_place_frees(server: ServerThread, actor: Actor, timeout: float = 20.0) -> httpx.Response:
    """The first /v1 call admitted (a place is given back once its call has ended, just after its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        response = complete(server, actor)
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def queue_run(actor: Actor, text: str) -> str:
    cid = create_conversation(actor)
    return str(create_run(actor, start_thread(actor, cid, text), provider="openai", model=MODEL)["id"])


def claim_now(loop: Loop, dsn: str, queue: str) -> Any:
    """What a worker's claim would take now, under the cap (the claim is rolled back: nothing changes)."""

    async def claim() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            try:
                return await runs_repo.claim_next(conn, queue, "test-claim", max_per_tenant=CAP)
            finally:
                await tx.rollback()
        finally:
            await conn.close()

    return loop.run(claim())


def test_v1_calls_hold_the_tenant_s_places_and_one_more_is_a_429_while_another_tenant_goes_on(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
    make_tenant: Callable[..., Actor],
    hold: Callable[..., Held],
) -> None:
    busy, other = on(api, admin), on(api, make_tenant())
    calls = [hold(busy, f"v1 {i}") for i in range(CAP)]

    assert_over_the_cap(complete(api, busy))
    assert_over_the_cap(complete(api, busy, MODEL))
    assert [p for p in upstream.arrived if p.startswith("v1")] == [
        "v1 0",
        "v1 1",
    ]  # the refused never reached it

    # Another tenant's calls and runs have places of their own.
    also = hold(other, "other v1")
    assert complete(api, other).status_code == 200
    run_id = queue_run(other, "other run")
    upstream.wait_arrived("other run")
    upstream.open("other run")
    assert wait_for(other, run_id)["status"] == "COMPLETED"
    upstream.open("other v1")
    assert also.finish()[-1] == "[DONE]"

    # A call that ends gives its place back.
    upstream.open("v1 0")
    assert calls[0].finish()[-1] == "[DONE]"
    assert admitted_when_a_place_frees(api, busy).status_code == 200
    hold(busy, "v1 2", wait=20)
    assert_over_the_cap(complete(api, busy))


def test_a_run_stays_queued_while_v1_calls_hold_the_places_and_starts_when_one_ends(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
    hold: Callable[..., Held],
    loop: Loop,
    dsn: str,
) -> None:
    busy = on(api, admin)
    calls = [hold(busy, f"v1 {i}") for i in range(CAP)]
    run_id = queue_run(busy, "waiting run")

    # No worker may take it: what a claim would take now is nothing, and the run is still queued.
    assert claim_now(loop, dsn, str(api.app.state.services.settings.run_queue)) is None
    assert read_run(busy, run_id)["status"] == "QUEUED"
    assert "waiting run" not in upstream.arrived

    # One call ends: its place goes to the run.
    upstream.open("v1 1")
    assert calls[1].finish()[-1] == "[DONE]"
    upstream.wait_arrived("waiting run")
    assert wait_for(busy, run_id, {"IN_PROGRESS"})["status"] == "IN_PROGRESS"
    upstream.open("waiting run")
    assert wait_for(busy, run_id)["status"] == "COMPLETED"


def test_executing_runs_hold_places_a_v1_call_is_refused_but_queued_runs_do_not(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
) -> None:
    busy = on(api, admin)
    runs = [queue_run(busy, f"run {i}") for i in range(CAP + 1)]  # CAP execute, one waits in the queue
    for i in range(CAP):
        upstream.wait_arrived(f"run {i}")
        assert wait_for(busy, runs[i], {"IN_PROGRESS"})["status"] == "IN_PROGRESS"
    assert read_run(busy, runs[CAP])["status"] == "QUEUED"

    assert_over_the_cap(complete(api, busy))

    # The runs end; the queued one takes a place (it had waited), and the other place is a /v1 call's again.
    upstream.open("run 0")
    upstream.open("run 1")
    upstream.wait_arrived(f"run {CAP}")
    assert admitted_when_a_place_frees(api, busy).status_code == 200
    upstream.open(f"run {CAP}")
    assert wait_for(busy, runs[CAP])["status"] == "COMPLETED"


def test_a_client_that_leaves_midway_or_a_model_that_fails_gives_its_place_back(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
    hold: Callable[..., Held],
) -> None:
    busy = on(api, admin)
    leaving, failing = hold(busy, "v1 leaving"), hold(busy, "fail v1")
    assert_over_the_cap(complete(api, busy))

    leaving.close()  # gone midway, its answer still held upstream
    taken = hold(busy, "v1 after leaving", wait=20)
    assert_over_the_cap(complete(api, busy))

    upstream.open("fail v1")
    error = json.loads(failing.finish()[-1])
    assert error["error"]["code"] == "provider_error", error
    assert admitted_when_a_place_frees(api, busy).status_code == 200
    upstream.open(taken.text)
    assert taken.finish()[-1] == "[DONE]"


def test_a_call_whose_key_is_revoked_midway_gives_its_place_back(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
    hold: Callable[..., Held],
) -> None:
    busy = on(api, admin)
    made = busy.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "short-lived") { secret apiKey { id } } }',
        {"u": admin.user_id},
    )["apiKeyCreate"]
    short_lived = Actor(admin.tenant_id, admin.user_id, made["secret"], Client(api.url, made["secret"]))
    revoked, other = hold(short_lived, "tick revoked"), hold(busy, "v1 other")
    assert_over_the_cap(complete(api, busy))

    busy.client.ok("mutation($k: ID!) { apiKeyRevoke(id: $k) { revoked } }", {"k": made["apiKey"]["id"]})
    error = json.loads(revoked.finish()[-1])["error"]  # ended within a second, the model still speaking
    assert error["code"] == "invalid_api_key", error
    assert admitted_when_a_place_frees(api, busy).status_code == 200
    upstream.open(other.text)
    assert other.finish()[-1] == "[DONE]"
    short_lived.client.close()


@contextlib.contextmanager
def dying_server(
    dsn: str, upstream: HeldUpstream, **settings: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`threadline serve` in a process of its own whose leases last 2 s (renewed every 0.2 s), no recovery of its
    own, and any other `settings` (environment variables): its URL and process, to SIGKILL midway."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "0",
        "THREADLINE_RUN_WORKERS": "0",
        "THREADLINE_RUN_RECOVERY_SECONDS": "0",
        f"{SETTING}": str(CAP),
        "THREADLINE_RUN_HEARTBEAT_SECONDS": "0.2",
        "THREADLINE_RUN_STALE_SECONDS": "2",
        "THREADLINE_OPENAI_BASE_URL": upstream.base_url,
        "THREADLINE_OPENAI_API_KEY": "sk-test",
        "THREADLINE_OPENAI_MODELS": MODEL,
        "THREADLINE_OPENAI_DEFAULT_MODEL": MODEL,
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "the second server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_a_place_held_by_a_process_that_died_lapses_with_its_lease(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
    hold: Callable[..., Held],
    dsn: str,
) -> None:
    busy = on(api, admin)
    with dying_server(dsn, upstream) as (url, process):
        doomed = hold(busy, "v1 in a process that dies", url=url)
        hold(busy, "v1 here")
        assert_over_the_cap(complete(api, busy))  # the place held in the other process counts here too
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        doomed.close()
    # Nothing gives the dead process's place back: its lease (THREADLINE_RUN_STALE_SECONDS there) lapses.
    assert admitted_when_a_place_frees(api, busy, timeout=30).status_code == 200


def test_the_lapsed_lease_of_a_process_that_died_is_deleted_though_its_tenant_calls_no_more(
    upstream: HeldUpstream,
    admin: Actor,
    hold: Callable[..., Held],
    loop: Loop,
    dsn: str,
) -> None:
    """Only the tenant's next /v1 call deleted its lapsed leases: a tenant that made none kept a dead process's rows
    forever (found in review of fe3f474). Every live instance's run recovery deletes them."""

    async def leases() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM gateway_call"))
        finally:
            await conn.close()

    with dying_server(dsn, upstream) as (url, process):
        hold(admin, "v1 in a process that dies", url=url)
        assert loop.run(leases()) == 1
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    recovering = runs_server(dsn, run_workers=0, run_recovery_seconds=0.2, run_max_executing_per_tenant=CAP)
    recovering.start()
    try:
        deadline = time.monotonic() + 30
        while loop.run(leases()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert loop.run(leases()) == 0, "the lapsed lease was never deleted"
    finally:
        recovering.stop()


def test_a_call_asking_for_n_choices_holds_n_places_and_more_than_the_cap_is_refused_as_input(
    api: ServerThread,
    upstream: HeldUpstream,
    admin: Actor,
) -> None:
    """`n` completions at once are n completions' worth of the model (each draws a `runs` token): one call with
    `n` = 128 held one place, so a tenant of cap 2 had 256 completions executing (found in review of fe3f474)."""
    busy = on(api, admin)
    body = {
        "model": MODEL,
        "stream": True,
        "n": CAP,
        "messages": [{"role": "user", "content": "v1 n"}],
    }
    headers = {"Authorization": f"Bearer {busy.api_key}"}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{api.url}/v1/chat/completions", json=body, headers=headers) as held,
    ):
        assert held.status_code == 200, held.read()
        lines = held.iter_lines()  # kept: a dropped iterator closes the stream
        assert next(line for line in lines if line.startswith("data: "))
        assert_over_the_cap(complete(api, busy))  # its CAP choices hold every place
        upstream.open("v1 n")
        assert [line for line in lines if line.startswith("data: ")][-1] == "data: [DONE]"
    assert admitted_when_a_place_frees(api, busy).status_code == 200

    # More choices than the cap could never be admitted: a 400 naming `n`, not a 429 to retry forever.
    refused = httpx.post(
        f"{api.url}/v1/chat/completions",
        json={**body, "stream": False, "n": CAP + 1, "model": "echo"},
        headers=headers,
        timeout=30,
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "n"), error
    assert SETTING in error["message"], error
