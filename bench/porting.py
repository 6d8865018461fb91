"""Import and export figures: a generated ChatGPT export through `threadline import`, one big conversation
through the exporter, each against a raw baseline measured in the same run.

    .venv/bin/python bench/porting.py                      # 5,000 conversations x 100 messages, 10,000-message export
    .venv/bin/python bench/porting.py --conversations 500  # scaled down
    .venv/bin/python bench/porting.py --merge --conversations 1000 --rounds 3  # merge re-import of a 10%-grown export
    .venv/bin/python bench/porting.py --merge --mixed --conversations 500      # grown as real exports grow

Import: `threadline import --format chatgpt` in a subprocess (its peak RSS is read from the kernel),
against a raw COPY of the same message rows into `message` itself (its indexes, keys and triggers: the search
vector built row by row) and into a bare copy of the message table (no indexes, no tree, no parsing). Export: `conversationExport`'s document for a 10,000-message conversation,
against the bare `SELECT` of its rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from threadline.db import Database  # noqa: E402
from threadline.db.embedded import EmbeddedPostgres  # noqa: E402
from threadline.db.migrate import apply_migrations  # noqa: E402
from threadline.threads.paths import encode_rank  # noqa: E402


def node(
    node_id: str, parent: str | None, children: list[str], role: str, text: str, t: float
) -> dict[str, object]:
    return {
        "id": node_id,
        "message": {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": t,
            "update_time": None,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "end_turn": True,
            "weight": 1.0,
            "metadata": {"model_slug": "gpt-4o" if role == "assistant" else None, "request_id": "req-1"},
            "recipient": "all",
        },
        "parent": parent,
        "children": children,
    }


TEXT = (
    'Here is a fairly typical paragraph of a chat message, with some "quotes", a newline\nand a code sample:\n'
    "```python\nfor i in range(10):\n    print(i)\n```\nThat should be enough to look like real traffic. "
)


def conversation(index: int, messages: int, branches: int) -> dict[str, object]:
    """`branches` chains under one root (edits of the first message), `messages` nodes in all."""
    mapping: dict[str, object] = {}
    root = f"c{index}-root"
    per = messages // branches
    heads = []
    t0 = 1_700_000_000.0 + index * 1000
    n = 0
    for b in range(branches):
        previous = root
        ids = [f"c{index}-b{b}-m{k}" for k in range(per)]
        heads.append(ids[0])
        for k, node_id in enumerate(ids):
            role = "user" if k % 2 == 0 else "assistant"
            children = [ids[k + 1]] if k + 1 < per else []
            mapping[node_id] = node(node_id, previous, children, role, f"{TEXT}#{n}", t0 + n)
            previous = node_id
            n += 1
    mapping[root] = {"id": root, "message": None, "parent": None, "children": heads}
    cid = str(uuid.UUID(int=index + 1))
    return {
        "title": f"Conversation {index}",
        "create_time": t0,
        "update_time": t0 + n,
        "mapping": mapping,
        "current_node": heads[-1],
        "default_model_slug": "gpt-4o",
        "id": cid,
        "conversation_id": cid,
    }


def write_export(path: Path, conversations: int, messages: int) -> None:
    with path.open("wb") as f:
        f.write(b"[")
        for i in range(conversations):
            if i:
                f.write(b",\n")
            f.write(orjson.dumps(conversation(i, messages, branches=2)))
        f.write(b"]")


def grown(conv: dict[str, object], extra: int) -> dict[str, object]:
    """The same conversation as a later export has it: `extra` new messages at the end of each branch
    (existing messages unchanged), as when the user went on talking after the first export."""
    mapping = conv["mapping"]
    assert isinstance(mapping, dict)
    tails = [key for key, n in mapping.items() if n["message"] is not None and not n["children"]]
    for tail in tails:
        previous = tail
        t = mapping[tail]["message"]["create_time"]
        for k in range(extra):
            node_id = f"{tail}-g{k}"
            mapping[previous]["children"] = [node_id]
            role = "user" if k % 2 == 0 else "assistant"
            mapping[node_id] = node(node_id, previous, [], role, f"{TEXT}#{node_id}", t + 1 + k)
            previous = node_id
    return conv


def write_grown_export(
    path: Path, conversations: int, messages: int, growth: float, *, mixed: bool = False
) -> None:
    """The export `growth` later: every conversation grown by `growth` (the figure's shape), or with `mixed` the way
    a real export grows by as much: a tenth of the conversations grown by `growth`, new conversations for the rest
    of the new messages, the others unchanged (byte for byte, as a later export writes them)."""
    extra = max(1, round(messages * growth / 2))  # per branch: two branches each
    grown_every = 10 if mixed else 1
    new = round(conversations * growth * (1 - 1 / grown_every)) if mixed else 0
    with path.open("wb") as f:
        f.write(b"[")
        for i in range(conversations + new):
            if i:
                f.write(b",\n")
            c = conversation(i, messages, branches=2)
            f.write(orjson.dumps(grown(c, extra) if i < conversations and i % grown_every == 0 else c))
        f.write(b"]")


def merge_figures(
    dsn: str, workdir: Path, conversations: int, messages: int, rounds: int = 1, *, mixed: bool = False
) -> None:
    """Issue 22's figure: re-importing an export that grew by 10% merges for <= 20% of the first import's time.

    Each round imports the export as a new user of a new tenant, then the grown export, then the grown export
    again; the ratios of each round are printed, then their medians (the machine is shared: rounds interleave
    with whatever else runs, so the medians are the figure). Client CPU (user + system of the `threadline import`
    process) is printed beside wall time: it moves less with the machine's load."""
    first_file, grown_file = workdir / "v1.json", workdir / "v2.json"
    write_export(first_file, conversations, messages)
    write_grown_export(grown_file, conversations, messages, 0.10, mixed=mixed)
    warm_up(dsn, workdir)
    merges, agains, cpu_merges, server_merges, starts = [], [], [], [], []
    for n in range(rounds):
        _, api_key = asyncio.run(setup(dsn))
        first_cpu, first_server = _children_cpu(), server_cpu()
        first_s, first, _ = import_run(dsn, first_file, api_key)
        first_cpu, first_server = _children_cpu() - first_cpu, server_cpu() - first_server
        # The newer export comes days later: autovacuum has vacuumed and analyzed the imported rows by then.
        # Without fresh statistics the planner ANDs the tenant index into the per-conversation read (all of the
        # tenant's rows); without the vacuum, autovacuum's pass over the first import's 50,000 rows ran during the
        # merge and its CPU was counted as the merge's (server CPU 1.2-1.7 s in one code's runs).
        asyncio.run(_analyze(dsn))
        merge_cpu, merge_server = _children_cpu(), server_cpu()
        merge_s, merged, _ = import_run(dsn, grown_file, api_key)
        merge_cpu, merge_server = _children_cpu() - merge_cpu, server_cpu() - merge_server
        again_s, again, _ = import_run(dsn, grown_file, api_key)
        # The fixed part of every run: interpreter, imports, migration check, pool, key check, authentication, audit.
        empty_s, _, _ = import_run(dsn, workdir / "empty.json", api_key)
        merges.append(merge_s / first_s)
        starts.append(empty_s / first_s)
        agains.append(again_s / first_s)
        cpu_merges.append(merge_cpu / first_cpu)
        server_merges.append(merge_server / first_server)
        print(
            f"round {n + 1}: first import {first['imported']:,} conversations, {first['messages']:,} messages in "
            f"{first_s:.1f} s ({first_cpu:.2f} s client CPU, {first_server:.2f} s server CPU); merge of the export "
            f"grown by 10% ({merged['imported']:,} new, {merged['merged']:,} merged, {merged['skipped']:,} unchanged; "
            f"{merged['messages']:,} messages added) {merge_s:.2f} s = "
            f"{merge_s / first_s:.0%} ({merge_cpu:.2f} s client CPU = {merge_cpu / first_cpu:.0%}, {merge_server:.2f} s "
            f"server CPU = {merge_server / first_server:.0%}); the same again "
            f"({again['skipped']:,} skipped) {again_s:.1f} s = {again_s / first_s:.0%}; an empty import (the CLI's "
            f"fixed start) {empty_s:.2f} s = {empty_s / first_s:.0%}"
        )
    print(
        f"median over {rounds} round(s): merge = {statistics.median(merges):.0%} of the first import's wall time "
        f"({statistics.median(cpu_merges):.0%} of its client CPU, {statistics.median(server_merges):.0%} of its server "
        f"CPU); unchanged re-import = "
        f"{statistics.median(agains):.0%}; empty import = {statistics.median(starts):.0%}"
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu() -> float:
    """CPU seconds the embedded PostgreSQL has used so far (NaN with DATABASE_URL): the postmaster's own, its
    reaped children's (a backend that exits is added to the postmaster's cutime) and its live children's. The
    machine is shared: CPU time per message moves far less with the load than wall time does."""
    if PGDATA is None:
        return float("nan")
    pid = (PGDATA / "postmaster.pid").read_text().split()[0]

    def fields(p: str) -> list[str]:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # state, ppid, ..., utime (11), stime, cutime, cstime

    total = sum(int(x) for x in fields(pid)[11:15])
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != pid:
            try:
                f = fields(entry)
            except OSError:
                continue
            if f[1] == pid:
                total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


PGDATA: Path | None = None


async def raw_copy_rates(dsn: str, rows: int) -> tuple[float, float, float, float]:
    """Messages per second for a bare COPY of message-shaped rows: into an index-free copy of the
    table, and into `message` itself (its indexes and search trigger, rolled back afterwards); and the server's
    CPU seconds of each."""
    conn = await asyncpg.connect(dsn)
    try:
        tenant, owner, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC)
        roots = [uuid.uuid4() for _ in range(rows // 100 + 1)]
        records = [
            (uuid.uuid4(), tenant, conversation, roots[i // 100], None, 1, encode_rank(i % 100), i, 0, "USER",
             f"{TEXT}#{i}", now)
            for i in range(rows)
        ]  # fmt: skip
        columns = ["id", "tenant_id", "conversation_id", "root_id", "parent_id", "depth", "path", "seq", "child_count",
                   "role", "content", "created_at"]  # fmt: skip
        rates, cpus = [], []
        for table in ("bench_message", "message"):
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE bench_message (LIKE message INCLUDING DEFAULTS)")
                await conn.execute(
                    "INSERT INTO tenant (id, name, settings) VALUES ($1, 'raw', '{}'::jsonb)", tenant
                )
                await conn.execute(
                    "INSERT INTO app_user (id, tenant_id, display_name, role) VALUES ($1, $2, 'raw', 'ADMIN')",
                    owner,
                    tenant,
                )
                await conn.execute(
                    "INSERT INTO conversation (id, tenant_id, owner_id, title) VALUES ($1, $2, $3, 'raw')",
                    conversation, tenant, owner,
                )  # fmt: skip
                start, cpu = time.perf_counter(), server_cpu()
                for k in range(0, rows, 10_000):
                    await conn.copy_records_to_table(table, records=records[k : k + 10_000], columns=columns)
                rates.append(rows / (time.perf_counter() - start))
                cpus.append(server_cpu() - cpu)
                await conn.execute("DROP TABLE bench_message")
                # Nothing of the baseline stays: undo the rows by hand inside the transaction.
                await conn.execute("DELETE FROM tenant WHERE id = $1", tenant)
        return rates[0], rates[1], cpus[0], cpus[1]
    finally:
        await conn.close()


# The CLI's modules compiled once for all runs (as an installed package has them), in the bench's own directory:
# with PYTHONDONTWRITEBYTECODE set (as in the shared sandbox) every run compiled ~190 modules from source, ~0.5 s
# of each run's wall time that no installed `threadline` pays.
PYCACHE: Path | None = None


def import_run(dsn: str, path: Path, api_key: str) -> tuple[float, dict[str, object], int]:
    env = {**os.environ, "DATABASE_URL": dsn}
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "threadline.cli",
            "import",
            str(path),
            "--format",
            "chatgpt",
            "--api-key",
            api_key,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"import failed: {result.stderr[-2000:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, json.loads(result.stdout.strip().splitlines()[-1]), peak_kb


def warm_up(dsn: str, workdir: Path) -> None:
    """An import of an empty file first: the CLI's modules are compiled (PYCACHE) before anything is timed."""
    global PYCACHE
    PYCACHE = workdir / "pycache"
    empty = workdir / "empty.json"
    empty.write_bytes(b"[]")
    _, api_key = asyncio.run(setup(dsn))
    import_run(dsn, empty, api_key)


async def export_figures(
    dsn: str, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> tuple[float, float, int]:
    from threadline.porting import exporter
    from threadline.porting import repository as repo

    db = await Database.connect(dsn, 1, 2)
    try:
        row = await repo.conversation_row(db, tenant_id, conversation_id)
        assert row is not None
        raw, full, size = [], [], 0
        for _ in range(3):
            start = time.perf_counter()
            await db.fetch(
                "SELECT * FROM message WHERE tenant_id = $1 AND conversation_id = $2",
                tenant_id,
                conversation_id,
            )
            raw.append(time.perf_counter() - start)
            start = time.perf_counter()
            document = await exporter.conversation_document(db, tenant_id, row, datetime.now(UTC))
            size = len(orjson.dumps(document))
            full.append(time.perf_counter() - start)
        assert len(document["messages"]) > 0
        return min(raw), min(full), size
    finally:
        await db.close()


async def setup(dsn: str) -> tuple[uuid.UUID, str]:
    from threadline.auth.service import create_tenant

    await apply_migrations(dsn)
    db = await Database.connect(dsn, 1, 2)
    try:
        created = await create_tenant(
            db, f"bench-{uuid.uuid4().hex[:6]}", f"bench-{uuid.uuid4().hex[:6]}@example.com"
        )
        return created.tenant_id, created.api_key
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100, help="messages per conversation")
    parser.add_argument("--export-messages", type=int, default=10_000)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="only the merge figure: import, then re-import the export grown by 10%%",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --merge: rounds, medians printed")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="with --merge: the export grows as real ones do (a tenth of the conversations grown by 10%%, new "
        "conversations for the rest of the 10%%, the others unchanged) instead of every conversation by 10%%",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tl-bench-porting-"))
    embedded = None
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        embedded = EmbeddedPostgres(workdir)
        dsn = embedded.start()
        global PGDATA
        PGDATA = embedded.pgdata
    try:
        tenant_id, api_key = asyncio.run(setup(dsn))
        if args.merge:
            merge_figures(dsn, workdir, args.conversations, args.messages, args.rounds, mixed=args.mixed)
            return
        export_file = workdir / "conversations.json"
        start = time.perf_counter()
        write_export(export_file, args.conversations, args.messages)
        total = args.conversations * args.messages
        size = export_file.stat().st_size
        print(
            f"generated {args.conversations:,} conversations / {total:,} messages, {size / 1e6:,.0f} MB "
            f"in {time.perf_counter() - start:.1f} s"
        )

        warm_up(dsn, workdir)
        raw_rows = min(total, 100_000)
        bare_rate, table_rate, bare_cpu, table_cpu = asyncio.run(raw_copy_rates(dsn, raw_rows))
        cpu = server_cpu(), _children_cpu()
        elapsed, report, peak_kb = import_run(dsn, export_file, api_key)
        server_s, client_s = server_cpu() - cpu[0], _children_cpu() - cpu[1]
        messages = int(report["messages"])  # type: ignore[call-overload]
        rate = messages / elapsed
        print(
            f"import: {report['imported']:,} conversations, {messages:,} messages in {elapsed:.1f} s = "
            f"{rate:,.0f} messages/s; peak RSS {peak_kb / 1024:,.0f} MB for a {size / 1e6:,.0f} MB file"
        )
        print(
            f"  CPU: server {server_s * 1e6 / messages:,.1f} us + client {client_s * 1e6 / messages:,.1f} us a message "
            f"(= {messages / (server_s + client_s):,.0f} messages per CPU-second); raw COPY into the message table "
            f"{table_cpu * 1e6 / raw_rows:,.1f} us a message (server), into the bare copy "
            f"{bare_cpu * 1e6 / raw_rows:,.1f} us; import server CPU / raw COPY's = "
            f"{server_s / messages / (table_cpu / raw_rows):.2f}"
        )
        print(
            f"  raw COPY baseline into the message table (its indexes, foreign keys and triggers, the search vector "
            f"built row by row; no parsing, no tree): {table_rate:,.0f} messages/s; import / raw = "
            f"{rate / table_rate:.2f}"
        )
        print(
            f"  raw COPY into an index-free copy of the table (no indexes, keys, triggers or vectors): "
            f"{bare_rate:,.0f} messages/s; import / raw = {rate / bare_rate:.3f}"
        )

        big = workdir / "big.json"
        big.write_bytes(
            orjson.dumps(
                [conversation(10**6, args.export_messages, branches=max(1, args.export_messages // 500))]
            )
        )
        elapsed_big, big_report, _ = import_run(dsn, big, api_key)
        conversation_id = asyncio.run(_conversation_by_title(dsn, f"Conversation {10**6}"))
        raw_s, export_s, bytes_out = asyncio.run(export_figures(dsn, tenant_id, conversation_id))
        print(
            f"export of a {big_report['messages']:,}-message conversation: {export_s * 1000:,.0f} ms "
            f"({bytes_out / 1e6:,.1f} MB of JSON); raw SELECT of its rows {raw_s * 1000:,.0f} ms; "
            f"export / raw = {export_s / raw_s:.1f}"
        )
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the files and the database: ~1 GB a merge run


async def _analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def _conversation_by_title(dsn: str, title: str) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval("SELECT id FROM conversation WHERE title = $1", title)
        assert isinstance(value, uuid.UUID)
        return value
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
