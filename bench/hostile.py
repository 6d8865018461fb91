"""What one hostile request can cost the server (issue 12 items 1 and 3), against a real server process.

    .venv/bin/python bench/hostile.py [--window 3] [--quick]

The server is bench/server.py (the real app under uvicorn, default limits) in its own process on a private
embedded PostgreSQL; this process is only the client. For each request the server's CPU time is read from
/proc/<pid>/stat (utime + stime, all threads) before and after, and its peak RSS from /proc/<pid>/status
(VmHWM, reset to the current RSS through /proc/<pid>/clear_refs before each measured request, so the growth
is this request's). The PostgreSQL CPU (postmaster and its backends) is read the same way, for reference.

1. Anonymous documents (no Authorization): the issue's doubling fragments (19 and 60 levels), leaf-field
   doubling fragments (100 levels), 300 conflicting same-alias selections, 1,000 `__typename`, the full
   introspection query; baseline `{ __typename }`. Cheap requests are repeated (>= 1 s, >= 20 times) so the
   10 ms clock tick is not the resolution.
2. Authenticated tree reads on data seeded with COPY: a root with 20,000 replies read through 30 aliases of
   `replies`; a 999-deep chain (THREADLINE_THREAD_MAX_DEPTH is 1,000) through 30 aliases of `threadTree`;
   a 4,095-node binary tree through l/r fragment fan-out (12 levels) and through 30 aliases of 12 nested
   `replies`; legit references: one `replies` of the 20,000, one threadTree of the chain, 6 aliases of 12
   nested `replies` (24,564 messages, the most that fits), threadTree of 10,000 and of 25,000 nodes (the
   message budget).
3. Responsiveness: while a tree request runs (repeated back to back for --window seconds and at least 3 times,
   from another process: a thread here would share this client's GIL and inflate the viewer's latencies),
   another tenant sends `{ viewer { id } }` every 10 ms; its p50/p99/max latency vs the same client alone.
   When one request holds the event loop, the viewer's max is how long it held it.

Rate limits are raised (bench.fixtures.UNTHROTTLED) so the 100 viewer requests a second are not throttled;
every other setting is the default.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from graphql import get_introspection_query

from fixtures import (
    UNTHROTTLED,
    Caller,
    Database,
    Server,
    create_tenant,
    percentile_ms,
    random_content,
    seed_tree,
    start_conversation,
)
from threadline.ids import Kind, decode_id
from threadline.threads.paths import encode_rank

TICK = os.sysconf("SC_CLK_TCK")


# --- the server process, seen from /proc -------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # Fields after the command name (which may contain spaces): [0] is state (field 3), [1] ppid (field 4).
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def cpu_ms(pid: int) -> float:
    """utime + stime of the process (all its threads), in ms."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def postgres_cpu_ms(postmaster: int) -> float:
    """The postmaster's own CPU, its reaped children's, and its live children's (backends, workers), in ms."""
    fields = _stat_fields(postmaster)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            child = _stat_fields(int(entry))
        except OSError:
            continue
        if child[1] == str(postmaster):
            ticks += int(child[11]) + int(child[12])
    return ticks * 1000 / TICK


def memory_kb(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":")
                values[name] = int(value.split()[0])
    return values


def reset_peak(pid: int) -> None:
    """VmHWM back to the current RSS (Linux >= 4.0), so the next peak is the next request's."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


@dataclass
class Cost:
    cpu_ms: float  # server CPU per request
    db_cpu_ms: float  # PostgreSQL CPU per request
    wall_ms: float  # client-side latency per request
    rss_growth_mb: float  # peak RSS above the RSS before the request
    response_bytes: int
    status: int
    outcome: str  # the first error's code/limitName, or "ok"
    runs: int


class Target:
    def __init__(self, server: Server, postmaster: int) -> None:
        self.server = server
        self.pid = server.process.pid
        self.postmaster = postmaster

    def measure(
        self,
        send: Callable[[], httpx.Response],
        *,
        min_seconds: float = 0.0,
        min_runs: int = 1,
        max_runs: int = 1,
    ) -> Cost:
        """Sends the request `min_runs`..`max_runs` times (until `min_seconds` have passed): CPU per request, the
        largest peak RSS growth of any one of them, and the last response."""
        cpu = db = wall = 0.0
        growth = 0
        runs = 0
        started = time.perf_counter()
        response = None
        while runs < min_runs or (runs < max_runs and time.perf_counter() - started < min_seconds):
            reset_peak(self.pid)
            rss = memory_kb(self.pid)["VmRSS"]
            c0, d0, t0 = cpu_ms(self.pid), postgres_cpu_ms(self.postmaster), time.perf_counter()
            response = send()
            _ = response.content
            wall += time.perf_counter() - t0
            cpu += cpu_ms(self.pid) - c0
            db += postgres_cpu_ms(self.postmaster) - d0
            growth = max(growth, memory_kb(self.pid)["VmHWM"] - rss)
            runs += 1
        assert response is not None
        return Cost(
            cpu / runs,
            db / runs,
            wall * 1000 / runs,
            growth / 1024,
            len(response.content),
            response.status_code,
            outcome(response),
            runs,
        )


def outcome(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}, not JSON"
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return "ok"
    extensions = errors[0].get("extensions") or {}
    name = extensions.get("limitName")
    detail = f"{extensions.get('code')}"
    if name:
        detail += f" {name} (limit {extensions.get('limit')}, actual {extensions.get('actual')})"
    if len(errors) > 1:
        detail += f" +{len(errors) - 1} errors"
    if body.get("data") is not None:
        detail += ", partial data"
    return detail


# --- documents -----------------------------------------------------------------------------------------------


def doubling_fragments(levels: int, body: str) -> str:
    """The issue's document: `message { ...F<levels> }`, each fragment spreading the one below twice."""
    fragments = ["fragment F0 on Message { id }"]
    fragments += [
        f"fragment F{i} on Message {{ {body.format(p=f'F{i - 1}')} }}" for i in range(1, levels + 1)
    ]
    return f"query($id: ID!) {{ message(id: $id) {{ ...F{levels} }} }} " + " ".join(fragments)


ANONYMOUS = {
    "`{ __typename }` (baseline)": "{ __typename }",
    "doubling fragments, 19 levels (the issue's 1.3 KB document)": doubling_fragments(
        19, "replies {{ ...{p} }} replies {{ ...{p} }}"
    ),
    "doubling fragments, 60 levels": doubling_fragments(60, "replies {{ ...{p} }} replies {{ ...{p} }}"),
    "leaf doubling fragments `id ...F ...F`, 100 levels": doubling_fragments(100, "id ...{p} ...{p}"),
    "300 conflicting same-alias selections": "{ __schema { types { "
    + " ".join(("a: name", "a: kind")[i % 2] for i in range(300))
    + " } } }",
    "1,000 `__typename`": "{" + " __typename" * 1000 + " }",
    "full introspection query": get_introspection_query(),
}


def aliases(count: int, field: str) -> str:
    return " ".join(f"a{i}: {field}" for i in range(count))


def nested_replies(levels: int) -> str:
    inner = "id"
    for _ in range(levels):
        inner = f"id replies {{ {inner} }}"
    return f"replies {{ {inner} }}"


def fan_out(levels: int) -> str:
    fragments = ["fragment F0 on Message { id }"] + [
        f"fragment F{i} on Message {{ l: replies {{ ...F{i - 1} }} r: replies {{ ...F{i - 1} }} }}"
        for i in range(1, levels + 1)
    ]
    return f"query($id: ID!) {{ message(id: $id) {{ ...F{levels} }} }} " + " ".join(fragments)


TREE_NODES = "nodes { id parentId depth path role content createdAt }"


@dataclass
class TreeCase:
    name: str
    shape: str  # which seeded tree
    query: str


TREE_CASES = [
    TreeCase(
        "root with 20,000 replies, 1 x `replies { id content }` (legit)",
        "star",
        "query($id: ID!) { message(id: $id) { replies { id content } } }",
    ),
    TreeCase(
        "root with 20,000 replies, 30 aliases of `replies { id content }`",
        "star",
        f"query($id: ID!) {{ message(id: $id) {{ {aliases(30, 'replies { id content }')} }} }}",
    ),
    TreeCase(
        "999-deep chain, 1 x `threadTree { nodes { id path content } }` (legit)",
        "chain",
        "query($id: ID!) { threadTree(rootId: $id) { nodes { id path content } } }",
    ),
    TreeCase(
        "999-deep chain, 30 aliases of `threadTree { nodes { id path content } }`",
        "chain",
        f"query($id: ID!) {{ {aliases(30, 'threadTree(rootId: $id) { nodes { id path content } }')} }}",
    ),
    TreeCase("4,095-node binary tree, l/r fragment fan-out, 12 levels", "binary", fan_out(12)),
    TreeCase(
        "4,095-node binary tree, l/r fragment fan-out, 4 levels (30 aliases: the most that passes)",
        "binary",
        fan_out(4),
    ),
    TreeCase(
        "4,095-node binary tree, 30 aliases of 12 nested `replies`",
        "binary",
        f"query($id: ID!) {{ message(id: $id) {{ {aliases(30, nested_replies(11))} }} }}",
    ),
    TreeCase(
        "4,095-node binary tree, 6 aliases of 12 nested `replies` (24,564 messages: within the budget)",
        "binary",
        f"query($id: ID!) {{ message(id: $id) {{ {aliases(6, nested_replies(11))} }} }}",
    ),
    TreeCase(
        "threadTree of 10,000 nodes, all fields (legit)",
        "random10k",
        f"query($id: ID!) {{ threadTree(rootId: $id) {{ totalCount {TREE_NODES} }} }}",
    ),
    TreeCase(
        "threadTree of 25,000 nodes, all fields (legit, at the message budget)",
        "random25k",
        f"query($id: ID!) {{ threadTree(rootId: $id) {{ totalCount {TREE_NODES} }} }}",
    ),
]


# --- seeding ---------------------------------------------------------------------------------------------------


def seed_shape(dsn: str, caller: Caller, root_public_id: str, parents: list[int], seed: int) -> None:
    """Messages under `root_public_id`: node i (1..) replies to node parents[i - 1] (0 is the root). Rows go in
    with COPY, with the paths, depths and counters the application would leave (as fixtures.seed_tree)."""
    root_id = decode_id(root_public_id, Kind.MESSAGE)
    rng = random.Random(seed)
    contents = [random_content(rng) for _ in range(500)]

    async def work() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            root = await conn.fetchrow(
                "SELECT conversation_id, created_at FROM message WHERE id = $1", root_id
            )
            assert root is not None
            ids, paths, depths, children = [root_id], [b""], [0], [0]
            records = []
            for i, parent in enumerate(parents, start=1):
                message_id = uuid.uuid4()
                paths.append(paths[parent] + encode_rank(children[parent]))
                children[parent] += 1
                ids.append(message_id)
                depths.append(depths[parent] + 1)
                children.append(0)
                records.append(
                    (
                        message_id, caller.tenant_id, root["conversation_id"], root_id, ids[parent], depths[i],
                        paths[i], "ASSISTANT" if i % 2 else "USER", contents[i % len(contents)], caller.user_id,
                        root["created_at"] + timedelta(milliseconds=i),
                    )
                )  # fmt: skip
            await conn.copy_records_to_table(
                "message",
                records=records,
                columns=[
                    "id", "tenant_id", "conversation_id", "root_id", "parent_id", "depth", "path", "role",
                    "content", "author_id", "created_at",
                ],
            )  # fmt: skip
            await conn.execute(
                """UPDATE message m SET child_count = k.n
                   FROM unnest($1::uuid[], $2::int[]) AS k(id, n) WHERE m.id = k.id AND k.n > 0""",
                ids,
                children,
            )
            await conn.execute(
                """UPDATE thread SET reply_count = $2,
                       last_seq = (SELECT max(seq) FROM message WHERE root_id = $1) WHERE id = $1""",
                root_id,
                len(parents),
            )
            await conn.execute(
                "UPDATE conversation SET message_count = message_count + $2 WHERE id = $1",
                root["conversation_id"],
                len(parents),
            )
        finally:
            await conn.close()

    asyncio.run(work())


def vacuum(dsn: str) -> None:
    async def work() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    asyncio.run(work())


def seed(dsn: str, server: Server, caller: Caller, wanted: set[str] | None = None) -> dict[str, str]:
    """The trees the cases read, by shape: root ids."""
    roots: dict[str, str] = {}
    shapes: dict[str, Callable[[str], None]] = {
        "star": lambda root: seed_shape(dsn, caller, root, [0] * 20_000, 1),
        "chain": lambda root: seed_shape(dsn, caller, root, list(range(999)), 2),  # depths 1..999
        "binary": lambda root: seed_shape(dsn, caller, root, [(i - 1) // 2 for i in range(1, 4_095)], 3),
        "random10k": lambda root: seed_tree(dsn, caller, root, 10_000, 4),
        "random25k": lambda root: seed_tree(dsn, caller, root, 25_000, 5),
    }
    with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
        for shape, grow in shapes.items():
            if wanted is not None and shape not in wanted:
                continue
            _, root = start_conversation(client)
            grow(root)
            roots[shape] = root
    vacuum(dsn)
    return roots


# --- responsiveness -------------------------------------------------------------------------------------------

VIEWER = "{ viewer { id } }"


def viewer_latencies(url: str, caller: Caller, until: Callable[[], bool]) -> list[float]:
    """`{ viewer { id } }` every 10 ms (or right after the previous answer, if that took longer) until told."""
    latencies = []
    with httpx.Client(base_url=url, headers=caller.headers, timeout=120) as client:
        next_at = time.perf_counter()
        while not until():
            t0 = time.perf_counter()
            response = client.post("/graphql", json={"query": VIEWER})
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200 or "errors" in response.json():
                raise RuntimeError(f"viewer query failed: {response.text[:300]}")
            next_at += 0.010
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.perf_counter()
    return latencies


def _attack(
    url: str, api_key: str, query: str, root: str, window: float, runs: int, started: Any, sent: Any
) -> None:
    """The attacker's loop, in its own process (its client work never holds the viewer client's GIL)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=300) as client:
        started.set()
        stop = time.perf_counter() + window
        while time.perf_counter() < stop or sent.value < runs:
            client.post("/graphql", json={"query": query, "variables": {"id": root}}).read()
            sent.value += 1


def under_attack(
    url: str, attacker: Caller, viewer: Caller, query: str, root: str, window: float, runs: int
) -> tuple[list[float], int]:
    """The viewer's latencies while `query` is sent back to back, from another process, for `window` seconds and
    at least `runs` times: (latencies, attack requests sent)."""
    context = multiprocessing.get_context("spawn")
    started, sent = context.Event(), context.Value("i", 0)
    process = context.Process(
        target=_attack, args=(url, attacker.api_key, query, root, window, runs, started, sent), daemon=True
    )
    process.start()
    started.wait(60)
    latencies = viewer_latencies(url, viewer, lambda: not process.is_alive())
    process.join()
    return latencies, int(sent.value)


def summary(latencies: list[float]) -> tuple[float, float, float]:
    return percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99), max(latencies) * 1000


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=float, default=3.0, help="seconds each attack runs in part 3")
    parser.add_argument("--quick", action="store_true", help="1 run per tree request, 1 s windows")
    parser.add_argument(
        "--only", default="", help="run only the tree requests whose name contains this text (skips part 1)"
    )
    args = parser.parse_args()
    cases = [case for case in TREE_CASES if args.only in case.name]
    window = 1.0 if args.quick else args.window
    tree_runs = 1 if args.quick else 3

    database = Database()
    dsn = database.start()
    postmaster = int((database.tmp / "pgdata" / "postmaster.pid").read_text().split()[0])
    server = Server(dsn, env=UNTHROTTLED)
    try:
        attacker = create_tenant(dsn)
        viewer = create_tenant(dsn)
        t0 = time.perf_counter()
        roots = seed(dsn, server, attacker, {case.shape for case in cases})
        print(
            f"seeded {sum((20_000, 999, 4_094, 9_999, 24_999))} messages in {time.perf_counter() - t0:.1f} s"
        )
        target = Target(server, postmaster)
        anonymous = httpx.Client(base_url=server.url, timeout=300)
        member = httpx.Client(base_url=server.url, headers=attacker.headers, timeout=300)

        # Warm up: the first requests import and compile lazily.
        for _ in range(20):
            anonymous.post("/graphql", json={"query": "{ __typename }"})
            member.post("/graphql", json={"query": VIEWER})
        print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")

        print()
        print("1. anonymous documents (no Authorization): server CPU per request")
        print(
            f"{'document':<62} {'bytes':>6} {'CPU ms':>8} {'ratio':>8} {'DB ms':>6} {'wall ms':>8} {'RSS+MB':>7} {'n':>4}  outcome"
        )
        base = None
        for name, query in ANONYMOUS.items() if not args.only else ():
            variables = {"id": "msg_x"} if "$id" in query else {}

            def send(query: str = query, variables: dict[str, Any] = variables) -> httpx.Response:
                return anonymous.post("/graphql", json={"query": query, "variables": variables})

            cost = target.measure(send, min_seconds=1.5, min_runs=20, max_runs=2_000)
            base = base or cost.cpu_ms
            print(
                f"{name:<62} {len(query):>6} {cost.cpu_ms:>8.2f} {cost.cpu_ms / base:>8.1f} {cost.db_cpu_ms:>6.2f}"
                f" {cost.wall_ms:>8.2f} {cost.rss_growth_mb:>7.1f} {cost.runs:>4}  {cost.outcome}"
            )

        print()
        print(
            f"2. authenticated tree reads (median of {tree_runs}; RSS+ = the largest peak growth of one request)"
        )
        print(
            f"{'request':<86} {'CPU ms':>8} {'DB ms':>7} {'wall ms':>8} {'resp KB':>8} {'RSS+MB':>7}  outcome"
        )
        for case in cases:
            costs = []
            for _ in range(tree_runs):

                def send_tree(case: TreeCase = case) -> httpx.Response:
                    return member.post(
                        "/graphql", json={"query": case.query, "variables": {"id": roots[case.shape]}}
                    )

                costs.append(target.measure(send_tree))
            cpu = statistics.median(c.cpu_ms for c in costs)
            db = statistics.median(c.db_cpu_ms for c in costs)
            wall = statistics.median(c.wall_ms for c in costs)
            last = costs[-1]
            print(
                f"{case.name:<86} {cpu:>8.0f} {db:>7.0f} {wall:>8.0f} {last.response_bytes / 1e3:>8.1f}"
                f" {max(c.rss_growth_mb for c in costs):>7.1f}  {last.outcome}"
            )

        print()
        print(
            f"3. another tenant's `{{ viewer {{ id }} }}` every 10 ms, alone and while each request repeats for {window:g} s"
        )
        print(
            f"{'while':<86} {'n':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p50 x':>6} {'p99 x':>6} {'sent':>5}"
        )
        stop_at = time.perf_counter() + window
        alone = summary(viewer_latencies(server.url, viewer, lambda: time.perf_counter() > stop_at))
        print(f"{'nothing else (baseline)':<86} {'':>5} {alone[0]:>7.1f} {alone[1]:>7.1f} {alone[2]:>7.1f}")
        for case in cases:
            latencies, sent = under_attack(
                server.url, attacker, viewer, case.query, roots[case.shape], window, 3
            )
            p50, p99, worst = summary(latencies)
            print(
                f"{case.name:<86} {len(latencies):>5} {p50:>7.1f} {p99:>7.1f} {worst:>7.1f}"
                f" {p50 / alone[0]:>6.1f} {p99 / alone[1]:>6.1f} {sent:>5}"
            )
        print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
        anonymous.close()
        member.close()
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
