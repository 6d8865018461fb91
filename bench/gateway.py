"""Gateway overhead: a streamed chat completion through `/v1/chat/completions` with a `session_id` against
calling the OpenAI-compatible upstream directly, in one run.

    .venv/bin/python bench/gateway.py [--tokens 3000] [--rate 1000] [--rounds 3] [--history 20]

The upstream is a fake OpenAI-compatible endpoint in its own process that streams `--tokens` tokens at `--rate`
tokens per second on an absolute schedule (a role chunk first, one `chat.completion.chunk` per token, usage,
`[DONE]`). The gateway is the real server (bench/server.py, its own process, embedded PostgreSQL) with the
upstream as its `openai` provider; its calls carry a session whose branch holds `--history` messages, so each
one reads the branch, stores the user message and the reply, writes coalesced deltas and `message.done`. The
client reads each stream to `[DONE]`. Direct and gateway calls alternate for `--rounds` rounds; reported: the
median wall time of each, their ratio, and the median time to the first content token of each and the
difference (what the gateway adds). The stored reply is checked to hold every token.

Then the renewal of the leases of calls in progress (gateway.repository.renew_call_places: one statement per
process and THREADLINE_RUN_HEARTBEAT_SECONDS, whatever the number of calls) for 100, 1,000 and 5,000 calls of one
tenant: its p25/median/p75 over `--renewals` renewals (after 5 not counted), how many of one renewal's row updates
were HOT (no new index entries), and the table's and its indexes' size after them (before any vacuum).
`--renewal-only` measures just that (on a migrated database of its own, no server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import (  # noqa: E402
    UNTHROTTLED,
    Database,
    Server,
    create_tenant,
    free_port,
    graphql,
    percentile_ms,
    stop_process,
)

MODEL = "paced"


def serve_upstream(port: int, tokens: int, rate: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    def sse(value: object) -> bytes:
        return b"data: " + orjson.dumps(value) + b"\n\n"

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def paced() -> AsyncIterator[bytes]:
        start = time.monotonic()
        yield sse(chunk({"role": "assistant", "content": ""}))
        sent = 0
        while sent < tokens:
            due = min(tokens, int((time.monotonic() - start) * rate))
            if due <= sent:
                await asyncio.sleep(max(0.0, start + (sent + 1) / rate - time.monotonic()))
                continue
            yield b"".join(sse(chunk({"content": f"t{i} "})) for i in range(sent, due))
            sent = due
        yield sse(chunk({}, "stop"))
        usage = {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens}
        yield sse({**chunk({}), "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    async def complete(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(paced(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def timed_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, object]
) -> tuple[float, float, int]:
    """(time to the first content token, wall time to [DONE], content tokens) of one streamed call."""
    began = time.perf_counter()
    first = 0.0
    count = 0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            parsed = orjson.loads(data)
            choices = parsed.get("choices") or []
            if choices and choices[0]["delta"].get("content"):
                count += 1
                if not first:
                    first = time.perf_counter() - began
    return first, time.perf_counter() - began, count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--renewals", type=int, default=25)
    parser.add_argument("--renewal-only", action="store_true")
    parser.add_argument("--serve-upstream", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.tokens, args.rate)
        return
    if args.renewal_only:
        database = Database()
        try:
            renewal(database.start(), args.renewals)
        finally:
            database.stop()
        return

    upstream_port = free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve-upstream",
            str(upstream_port),
            "--tokens",
            str(args.tokens),
            "--rate",
            str(args.rate),
        ]
    )
    database = Database()
    try:
        dsn = database.start()
        run(args, upstream_port, dsn)
        renewal(dsn, args.renewals)
    finally:
        stop_process(upstream)
        database.stop()


def run(args: argparse.Namespace, upstream_port: int, dsn: str) -> None:
    server = Server(
        dsn,
        env={
            **UNTHROTTLED,
            "THREADLINE_RATE_LIMIT_RUNS": "10000000",
            "THREADLINE_OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
            "THREADLINE_OPENAI_MODELS": MODEL,
            "THREADLINE_OPENAI_DEFAULT_MODEL": MODEL,
            "THREADLINE_MODEL_CONTEXT_TOKENS": f"{MODEL}=128000",
            "THREADLINE_RUN_WORKERS": "0",
        },
    )
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            cid = graphql(
                client, 'mutation { conversationCreate(input: {title: "bench", sessionId: "bench"}) { id } }'
            )["conversationCreate"]["id"]
            parent = graphql(
                client,
                'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "history 0"}) { id } }',
                {"c": cid},
            )["threadStart"]["id"]
            for i in range(1, args.history):
                role = "ASSISTANT" if i % 2 else "USER"
                parent = graphql(
                    client,
                    "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }",
                    {"p": parent, "i": {"content": f"history {i} " * 20, "role": role}},
                )["messageReply"]["id"]

        async def measure() -> tuple[list[tuple[float, float, int]], list[tuple[float, float, int]]]:
            direct: list[tuple[float, float, int]] = []
            gateway: list[tuple[float, float, int]] = []
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Write at length."}],
                "stream": True,
            }
            async with httpx.AsyncClient(timeout=120) as client:
                # Warm both paths (connections, the gateway's provider pool) before measuring.
                await timed_stream(
                    client, f"http://127.0.0.1:{upstream_port}/v1/chat/completions", {}, {**body}
                )
                await timed_stream(client, f"{server.url}/v1/chat/completions", caller.headers, {**body})
                for _ in range(args.rounds):
                    direct.append(
                        await timed_stream(
                            client, f"http://127.0.0.1:{upstream_port}/v1/chat/completions", {}, body
                        )
                    )
                    gateway.append(
                        await timed_stream(
                            client,
                            f"{server.url}/v1/chat/completions",
                            caller.headers,
                            {**body, "session_id": "bench"},
                        )
                    )
            return direct, gateway

        direct, through = asyncio.run(measure())
        assert all(n == args.tokens for _, _, n in direct + through), "a stream lost tokens"
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            info = graphql(
                client, "query($c: ID!) { conversation(id: $c) { messageCount tokenCount } }", {"c": cid}
            )
        expected_messages = args.history + 2 * args.rounds
        assert info["conversation"]["messageCount"] == expected_messages, info

        def median(samples: list[tuple[float, float, int]], index: int) -> float:
            return statistics.median(s[index] for s in samples)

        wall_direct, wall_gateway = median(direct, 1), median(through, 1)
        ttft_direct, ttft_gateway = median(direct, 0), median(through, 0)
        print(
            f"tokens {args.tokens} at {args.rate:g}/s, {args.rounds} rounds, branch of {args.history} messages"
        )
        print(f"direct upstream: wall {wall_direct:.3f} s, first token {ttft_direct * 1000:.1f} ms")
        print(f"gateway + session: wall {wall_gateway:.3f} s, first token {ttft_gateway * 1000:.1f} ms")
        print(f"wall ratio {wall_gateway / wall_direct:.4f} (target <= 1.05)")
        print(f"first token added {(ttft_gateway - ttft_direct) * 1000:.1f} ms (target <= 20 ms)")
        print("per round (direct wall, gateway wall, direct ttft ms, gateway ttft ms):")
        for d, g in zip(direct, through, strict=True):
            print(f"  {d[1]:.3f} {g[1]:.3f} {d[0] * 1000:.1f} {g[0] * 1000:.1f}")
    finally:
        server.stop()


def renewal(dsn: str, renewals: int) -> None:
    """The cost of one renewal of every lease of `calls` calls in progress (module docstring)."""
    from threadline.gateway.repository import renew_call_places

    tenant = create_tenant(dsn).tenant_id

    async def measure(calls: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DELETE FROM gateway_call")
            await conn.execute("VACUUM gateway_call")
            ids = [uuid.uuid4() for _ in range(calls)]
            await conn.executemany(
                "INSERT INTO gateway_call (id, tenant_id, expires_at) VALUES ($1, $2, now() + interval '30 s')",
                [(i, tenant) for i in ids],
            )
            await conn.execute("VACUUM ANALYZE gateway_call")
            leases = [(tenant, i) for i in ids]
            async with conn.transaction():  # one renewal's own counts, whatever other sessions do
                await renew_call_places(conn, leases, 30.0)
                counts = await conn.fetchrow(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'gateway_call'"
                )
            assert counts is not None
            samples = []
            for i in range(5 + renewals):
                began = time.perf_counter()
                await renew_call_places(conn, leases, 30.0)
                if i >= 5:
                    samples.append(time.perf_counter() - began)
            sizes = await conn.fetchrow(
                "SELECT pg_relation_size('gateway_call') AS heap, pg_indexes_size('gateway_call') AS indexes"
            )
            assert sizes is not None
            print(
                f"renewal of {calls} leases: median {percentile_ms(samples, 0.5):.2f} ms "
                f"(p25-p75 {percentile_ms(samples, 0.25):.2f}-{percentile_ms(samples, 0.75):.2f} ms, "
                f"{renewals} renewals); HOT {counts['n_tup_hot_upd']}/{counts['n_tup_upd']} rows; "
                f"after {renewals + 6} renewals: table {sizes['heap'] / 1024:.0f} kB, "
                f"indexes {sizes['indexes'] / 1024:.0f} kB"
            )
            await conn.execute("DELETE FROM gateway_call")
        finally:
            await conn.close()

    for calls in (100, 1_000, 5_000):
        asyncio.run(measure(calls))


if __name__ == "__main__":
    main()
