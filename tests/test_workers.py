"""`threadline serve --workers N` (issue 14 item 4): N processes on one port, each with its own stream hub,
sharing events through PostgreSQL; Ctrl-C and SIGTERM stop all of them and the embedded PostgreSQL.

Which worker takes a connection is the kernel's choice: the tests open fresh connections until /metrics
(aggregated over the workers, with a per-pid gauge) shows that both processes answered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness import METRICS_HEADERS, Loop, create_admin, free_port, serve_process
from tests.test_streaming import START, conversation, live
from tests.ws import CONVERSATION_EVENTS, WsClient

TOKEN = METRICS_HEADERS["Authorization"].removeprefix("Bearer ")
# Upper bounds for a loaded machine (two shared cores), not latency claims.
SETTLE_SECONDS = 30.0
ATTEMPTS = 60


@pytest.fixture(scope="module")
def two_workers(dsn: str) -> Iterator[str]:
    with serve_process(
        dsn, THREADLINE_WORKERS="2", THREADLINE_RUN_WORKERS="0", THREADLINE_METRICS_TOKEN=TOKEN
    ) as url:
        yield url


def per_pid(base_url: str, gauge: str) -> dict[str, float]:
    """A per-process gauge of /metrics by pid (whichever worker answers the scrape reports every worker)."""
    text = httpx.get(f"{base_url}/metrics", headers=METRICS_HEADERS, timeout=10).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(gauge + "{"):
            pid = line.split('pid="', 1)[1].split('"', 1)[0]
            values[pid] = float(line.rsplit(" ", 1)[1])
    return values


def worker_pids(parent: int) -> set[str]:
    """The uvicorn workers under `threadline serve` (multiprocessing's resource tracker aside)."""
    pids = set()
    for child in psutil.Process(parent).children():
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                pids.add(str(child.pid))
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue  # a worker that has just exited (and not yet been reaped) is not serving
    return pids


def test_two_workers_answer_http_on_one_port(two_workers: str) -> None:
    for _ in range(ATTEMPTS):
        with httpx.Client(base_url=two_workers, timeout=30) as http:  # a new connection each time
            assert http.post("/graphql", json={"query": "{ __typename }"}).json() == {
                "data": {"__typename": "Query"}
            }
        answered = {pid for pid, n in per_pid(two_workers, "threadline_worker_http_requests").items() if n}
        if len(answered) == 2:
            return
    raise AssertionError(f"only {answered} answered {ATTEMPTS} connections")


def test_two_workers_serve_subscriptions_and_share_their_events(
    two_workers: str, loop: Loop, dsn: str
) -> None:
    admin = create_admin(loop, dsn, two_workers)
    sockets: list[WsClient] = []
    try:
        cid = conversation(admin)
        since = live(admin)
        ws_url = "ws://" + two_workers.removeprefix("http://") + "/graphql"
        holding: set[str] = set()
        # The kernel hands each new connection to whichever worker accepts first; on a loaded machine
        # one worker can win many in a row, so keep opening sockets (up to ATTEMPTS) rather than
        # waiting long on each.
        deadline = time.monotonic() + 4 * SETTLE_SECONDS
        while len(holding) < 2:
            assert len(sockets) < ATTEMPTS and time.monotonic() < deadline, f"subscriptions only on {holding}"
            socket = WsClient(ws_url, admin.api_key)
            socket.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": since})
            sockets.append(socket)
            # Each worker publishes its own count at least once a second.
            settle = time.monotonic() + 1.5
            while time.monotonic() < settle:
                gauge = per_pid(two_workers, "threadline_worker_subscriptions_active")
                holding = {pid for pid, n in gauge.items() if n}
                if len(holding) == 2:
                    break
                time.sleep(0.2)
        # A thread started through whichever worker takes the request reaches the sockets of both.
        admin.client.ok(START, {"c": cid, "x": "to every worker"})
        for socket in sockets:
            (event,) = socket.events(1, timeout=SETTLE_SECONDS)
            assert event["type"] == "thread.new"
    finally:
        for socket in sockets:
            socket.close()
        admin.client.http.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_worker_and_the_embedded_postgres(stop: signal.Signals) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tl-workers-"))
    os.chmod(data_dir, 0o755)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "THREADLINE_DATA_DIR": str(data_dir),
        "THREADLINE_RUN_WORKERS": "0",
        "THREADLINE_METRICS_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "serve exited during start-up"
            assert time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        while len(worker_pids(process.pid)) < 2:  # the second may still be starting
            assert time.monotonic() < deadline, "two workers never ran"
            time.sleep(0.2)
        workers = [psutil.Process(int(pid)) for pid in worker_pids(process.pid)]
        assert len(embedded_postgres(data_dir)) == 1, "one embedded PostgreSQL for both workers"

        process.send_signal(stop)
        process.wait(timeout=60)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers left running: {alive}"
        assert not embedded_postgres(data_dir), "the embedded PostgreSQL outlived serve"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for proc in embedded_postgres(data_dir):
            proc.kill()


def embedded_postgres(data_dir: Path) -> list[psutil.Process]:
    """The postmaster of `data_dir` (its command line names the directory; its backends' do not)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "postgres" in cmdline and str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_workers_do_not_outlive_a_killed_parent(dsn: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "false",
        "THREADLINE_RUN_WORKERS": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(worker_pids(process.pid)) < 2 or not ready(f"http://127.0.0.1:{port}"):
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        workers = [psutil.Process(int(pid)) for pid in worker_pids(process.pid)]
        process.kill()  # SIGKILL: the parent runs no cleanup
        process.wait()
        gone, alive = psutil.wait_procs(workers, timeout=SETTLE_SECONDS)
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_workers_draw_from_one_rate_limit_budget(dsn: str, loop: Loop) -> None:
    budget = 6
    with serve_process(
        dsn,
        THREADLINE_WORKERS="2",
        THREADLINE_RUN_WORKERS="0",
        THREADLINE_METRICS_TOKEN=TOKEN,
        THREADLINE_RATE_LIMIT_REQUESTS=str(budget),
        THREADLINE_CREDENTIAL_CACHE_SECONDS="3600",
    ) as url:
        admin = create_admin(loop, dsn, url)
        admin.client.http.close()
        headers = {"Authorization": f"Bearer {admin.api_key}"}
        codes: list[str] = []
        served_by: set[str] = set()
        # Calls on fresh connections until both workers served some (and the budget is past).
        while len(served_by) < 2 or len(codes) < budget + 2:
            assert len(codes) < ATTEMPTS, f"only {served_by} answered {len(codes)} connections"
            before = per_pid(url, "threadline_worker_http_requests")  # /metrics itself is not counted
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                body = http.post("/graphql", json={"query": "{ viewer { id } }"}).json()
            after = per_pid(url, "threadline_worker_http_requests")
            served_by |= {pid for pid, n in after.items() if n > before.get(pid, 0)}
            codes.append(body["errors"][0]["extensions"]["code"] if body.get("errors") else "OK")
    # One budget for the user, whichever process answers: budgets per process would let more calls through.
    assert codes == ["OK"] * budget + ["RATE_LIMITED"] * (len(codes) - budget)


def test_a_killed_serve_then_a_restart_leave_no_postgres_behind() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="tl-workers-"))
    os.chmod(data_dir, 0o755)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"THREADLINE_DATA_DIR": str(data_dir), "THREADLINE_RUN_WORKERS": "0"}

    def start() -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while len(worker_pids(process.pid)) < 2 or not ready(f"http://127.0.0.1:{port}"):
            assert process.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        return process, [psutil.Process(int(pid)) for pid in worker_pids(process.pid)]

    first = second = None
    try:
        first, workers = start()
        first.kill()  # a crash: nothing of serve's own cleanup runs
        first.wait()
        psutil.wait_procs(workers, timeout=SETTLE_SECONDS)
        second, workers = start()  # joins (or restarts) the data directory's PostgreSQL
        assert len(embedded_postgres(data_dir)) == 1
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
        psutil.wait_procs(workers, timeout=SETTLE_SECONDS)
        assert not embedded_postgres(data_dir), "PostgreSQL outlived the restarted serve"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        for proc in embedded_postgres(data_dir):
            proc.kill()
