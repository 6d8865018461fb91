"""What MASK_ON_READ costs a reader: threadTree end to end over HTTP, read by a member who is not the author,
in a tenant with policy OFF and in two with MASK_ON_READ (same trees, a quarter of the messages holding an
email address): one whose messages were scanned when written (`threadline pii backfill` here: the stored
detections are spliced on read) and one whose were not (detected again on every read), against the raw
baseline of bench/thread_tree.py (asyncpg + orjson, in this process).

    .venv/bin/python bench/pii_read.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import asyncpg
import httpx
from thread_tree import TREE_QUERY, RawTree, http_sample

from fixtures import (
    Caller,
    Database,
    Server,
    create_tenant,
    graphql,
    median_ms,
    seed_tree,
    start_conversation,
)
from threadline.ids import Kind, decode_id

INVITE = "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }"


def member_of(client: httpx.Client, conversation: str) -> dict[str, str]:
    """A member of the tenant joined to `conversation`: their Authorization header."""
    user = graphql(
        client,
        "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
        {"i": {"email": f"reader-{uuid.uuid4().hex[:6]}@example.com", "role": "MEMBER"}},
    )["userCreate"]["id"]
    key = graphql(
        client, 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "b") { secret } }', {"u": user}
    )["apiKeyCreate"]["secret"]
    invite = graphql(client, INVITE, {"c": conversation, "u": user})["participantInvite"]["id"]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=str(client.base_url), headers=headers, timeout=60) as member:
        graphql(member, "mutation($i: ID!) { inviteAccept(id: $i) { id } }", {"i": invite})
    return headers


def add_pii(dsn: str, tenant_id: uuid.UUID) -> None:
    async def work() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """UPDATE message SET content = content || ' mail maria.gonzalez@example.org'
                   WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY root_id ORDER BY path) AS n
                                                FROM message WHERE tenant_id = $1) every WHERE n % 4 = 0)""",
                tenant_id,
            )
        finally:
            await conn.close()

    asyncio.run(work())


def backfill(dsn: str, tenant_id: uuid.UUID) -> None:
    from threadline.db import Database as Pool
    from threadline.privacy.backfill import backfill as run

    async def work() -> None:
        db = await Pool.connect(dsn, 1, 2)
        try:
            await run(db, tenant_id, 2_000)
        finally:
            await db.close()

    asyncio.run(work())


POLICIES = {"OFF": "OFF", "scanned": "MASK_ON_READ", "unscanned": "MASK_ON_READ"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    runs = {1_000: 8 if args.quick else 30, 10_000: 3 if args.quick else 10}

    database = Database()
    dsn = database.start()
    server = Server(dsn)
    try:
        setups: dict[str, tuple[Caller, dict[str, str], dict[int, str]]] = {}
        for name, policy in POLICIES.items():
            admin = create_tenant(dsn)
            roots: dict[int, str] = {}
            with httpx.Client(base_url=server.url, headers=admin.headers, timeout=60) as client:
                graphql(client, "mutation($p: PiiPolicy!) { tenantPiiPolicySet(policy: $p) }", {"p": policy})
                reader: dict[str, str] = {}
                for size in runs:
                    conversation, root = start_conversation(client)
                    seed_tree(dsn, admin, root, size)
                    reader[str(size)] = member_of(client, conversation)["Authorization"]
                    roots[size] = root
            add_pii(dsn, admin.tenant_id)
            if name == "scanned":
                backfill(dsn, admin.tenant_id)
            setups[name] = (admin, reader, roots)

        print(
            "threadTree read by a member (not the author), median ms; ratio = HTTP / raw asyncpg+orjson baseline"
        )
        print("scanned: detections stored with the text; unscanned: detected on every read; cost = / OFF")
        print(
            f"{'nodes':>7} {'raw':>8} {'OFF':>8} {'ratio':>6} {'scanned':>8} {'ratio':>6} {'cost':>6}"
            f" {'unscanned':>9} {'ratio':>6} {'cost':>6}"
        )
        for size, n in runs.items():
            admin, _, roots = setups["OFF"]
            raw = RawTree(dsn, admin.tenant_id, decode_id(roots[size], Kind.MESSAGE))
            clients = {
                policy: (
                    httpx.Client(
                        base_url=server.url, headers={"Authorization": reader[str(size)]}, timeout=120
                    ),
                    root_ids[size],
                )
                for policy, (_, reader, root_ids) in setups.items()
            }
            samples: dict[str, list[float]] = {"raw": [], **{name: [] for name in POLICIES}}
            bodies: dict[str, bytes] = {}
            try:
                for i in range(n + 2):  # rounds interleave the three, so they see the same machine
                    elapsed, _ = raw.sample()
                    if i >= 2:
                        samples["raw"].append(elapsed)
                    for policy, (client, root) in clients.items():
                        elapsed, bodies[policy] = http_sample(client, TREE_QUERY, root)
                        if i >= 2:
                            samples[policy].append(elapsed)
            finally:
                raw.close()
                for client, _ in clients.values():
                    client.close()
            if b"maria.gonzalez@example.org" not in bodies["OFF"] or any(
                b"gonzalez" in bodies[name] for name in ("scanned", "unscanned")
            ):
                found = {name: body.count(b"gonzalez") for name, body in bodies.items()}
                raise SystemExit(
                    f"the OFF tenant must read the address, the MASK_ON_READ ones must not: {found}"
                )
            if bodies["scanned"].count(b"[EMAIL]") != bodies["unscanned"].count(b"[EMAIL]"):
                raise SystemExit("stored and fresh detections must mask the same")
            m = {name: median_ms(values) for name, values in samples.items()}
            print(
                f"{size:>7} {m['raw']:>8.1f} {m['OFF']:>8.1f} {m['OFF'] / m['raw']:>6.2f}"
                f" {m['scanned']:>8.1f} {m['scanned'] / m['raw']:>6.2f} {m['scanned'] / m['OFF']:>5.2f}x"
                f" {m['unscanned']:>9.1f} {m['unscanned'] / m['raw']:>6.2f} {m['unscanned'] / m['OFF']:>5.2f}x"
            )
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
