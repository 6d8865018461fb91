"""The pinned-first page (`conversations(pinnedFirst: true)`, `repository.list_conversations(pinned_first=True)`).

It reads the caller's pins and the unpinned conversations as two parts of at most a page each, and computes the
per-row columns for the page's rows only. These tests hold it to the statement it replaced (one LEFT JOIN of the
pins, sorted by the pin rank: kept below as `reference_page`) over randomized data, check its plan in a tenant of
100,000 conversations, and page through it over HTTP.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation, join
from tests.harness import Actor, Loop
from threadline.auth.principal import Principal, Role
from threadline.conversations import repository as repo
from threadline.conversations.repository import PIN_RANK, UNPINNED_RANK, PageRelations, list_conversations
from threadline.metadata.rules import MetadataFilter

Cursor = tuple[int, datetime, uuid.UUID]


async def reference_page(
    db: Any,
    principal: Principal,
    *,
    status: str | None,
    tags: list[str] | None,
    limit: int,
    after: Cursor | None,
    metadata: MetadataFilter | None = None,
    folder_id: uuid.UUID | None = None,
    unfiled: bool = False,
    relations: PageRelations | None = None,
) -> list[asyncpg.Record]:
    """The pinned-first page as `list_conversations` built it before (a copy): every readable conversation
    LEFT JOINed to the caller's pin and sorted by `PIN_RANK`, then most recent activity."""
    params: list[Any] = []
    where = repo._list_filters(principal, status, tags, params, metadata, folder_id, unfiled)
    related = repo._participants_column(relations, "$1")
    params.append(principal.user_id)
    join = f"LEFT JOIN conversation_pin pn ON pn.conversation_id = c.id AND pn.user_id = ${len(params)}"
    if after is not None:
        params.extend(after)
        r, t, i = (f"${len(params) - n}" for n in (2, 1, 0))
        where += f" AND ({PIN_RANK} > {r} OR ({PIN_RANK} = {r} AND (c.last_activity_at, c.id) < ({t}, {i})))"
    params.append(limit)
    page = f"""SELECT {repo.CONVERSATION_COLUMNS}, {PIN_RANK} AS pin_rank{related} FROM conversation c {join}
            WHERE {where} ORDER BY {PIN_RANK}, c.last_activity_at DESC, c.id DESC LIMIT ${len(params)}"""
    order = "page.pin_rank, page.last_activity_at DESC, page.id DESC"
    return list(await db.fetch(repo._with_page_users(page, relations, "$1", order), *params))


def plain(value: Any) -> Any:
    """A row (and the composite values in its arrays) as comparable Python values, with its column names.
    `page_users` is a set of users in no particular order (the users loader is primed with it): sorted here, as
    its order follows the plan PostgreSQL picks for the users' look-up (it differed in a full suite's database)."""
    if isinstance(value, asyncpg.Record):
        return tuple(
            (k, sorted(plain(v), key=repr) if k == "page_users" and v is not None else plain(v))
            for k, v in value.items()
        )
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def without_users(row: asyncpg.Record) -> Any:
    return tuple((k, v) for k, v in plain(row) if k != "page_users")


def cursor_of(row: asyncpg.Record) -> Cursor:
    return (row["pin_rank"], row["last_activity_at"], row["id"])


async def connect(dsn: str) -> asyncpg.Connection:
    db = await asyncpg.connect(dsn)
    await db.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    return db


# ---------------------------------------------------------------------------------------------------------------
# Randomized data: two tenants, users of every role, conversations with tied activity, every status, tags,
# metadata, folders, cold tiers, participants, and pins at dense, sparse and repeated positions, of conversations
# the pinning user may or may not read, archived and deleted ones, other users' pins and pins into another tenant.


async def seed_world(db: asyncpg.Connection, rnd: random.Random) -> dict[str, Any]:
    tenant, elsewhere = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        "INSERT INTO tenant (id, name) VALUES ($1, $3), ($2, $4)",
        tenant,
        elsewhere,
        f"t{tenant}",
        f"e{tenant}",
    )
    people = {
        "admin": ("ADMIN", None),
        "member": ("MEMBER", "red"),
        "manager": ("MANAGER", "red"),
        "other": ("MEMBER", "blue"),
    }
    users: dict[str, uuid.UUID] = {}
    for name, (role, team) in people.items():
        users[name] = await db.fetchval(
            "INSERT INTO app_user (tenant_id, email, role, team) VALUES ($1, $2, $3, $4) RETURNING id",
            tenant,
            f"{name}-{tenant}@example.com",
            role,
            team,
        )
    stranger = await db.fetchval(
        "INSERT INTO app_user (tenant_id, email, role) VALUES ($1, $2, 'ADMIN') RETURNING id",
        elsewhere,
        f"stranger-{tenant}@example.com",
    )
    base = datetime(2026, 11, 1, tzinfo=UTC)
    moments = [base + timedelta(minutes=m) for m in range(7)]  # few moments: many ties, broken by id
    conversations: list[uuid.UUID] = []
    for n in range(rnd.randint(20, 35)):
        cid = uuid.uuid4()
        owner = rnd.choice(list(users.values()))
        await db.execute(
            """INSERT INTO conversation (id, tenant_id, owner_id, title, status, tags, metadata, last_activity_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            cid,
            tenant,
            owner,
            f"c{n}",
            rnd.choice(["ACTIVE", "ACTIVE", "ACTIVE", "ARCHIVED", "DELETED"]),
            rnd.sample(["x", "y", "z"], rnd.randint(0, 3)),
            rnd.choice([None, {"k": "a"}, {"k": "b"}, {"k": "a", "j": "1"}]),
            rnd.choice(moments),
        )
        await db.execute(
            "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role) VALUES ($1, $2, $3, $4, 'OWNER')",
            uuid.uuid4(),
            tenant,
            cid,
            owner,
        )
        for name in ("member", "manager", "other"):
            if users[name] != owner and rnd.random() < 0.3:
                await db.execute(
                    "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role) VALUES ($1, $2, $3, $4, $5)",
                    uuid.uuid4(),
                    tenant,
                    cid,
                    users[name],
                    rnd.choice(["MEMBER", "VIEWER"]),
                )
        if n == 0 or rnd.random() < 0.25:  # cold (a document) or not (none yet)
            await db.execute(
                "INSERT INTO conversation_tier (conversation_id, tenant_id, document) VALUES ($1, $2, $3)",
                cid,
                tenant,
                b"\x00" if n == 0 else rnd.choice([None, b"\x00"]),
            )
        conversations.append(cid)
    theirs = []
    for n in range(4):
        cid = uuid.uuid4()
        await db.execute(
            "INSERT INTO conversation (id, tenant_id, owner_id, title, last_activity_at) VALUES ($1, $2, $3, $4, $5)",
            cid,
            elsewhere,
            stranger,
            f"e{n}",
            rnd.choice(moments),
        )
        theirs.append(cid)
    folders: dict[str, list[uuid.UUID]] = {}
    for name, user in users.items():
        folders[name] = []
        for n in range(2):
            folder = await db.fetchval(
                """INSERT INTO folder (id, tenant_id, user_id, name, position, depth)
                   VALUES (gen_random_uuid(), $1, $2, $3, $4, 0) RETURNING id""",
                tenant,
                user,
                f"f{n}",
                n,
            )
            folders[name].append(folder)
        for cid in conversations:
            if rnd.random() < 0.35:
                await db.execute(
                    """INSERT INTO conversation_folder (id, tenant_id, user_id, conversation_id, folder_id)
                       VALUES ($1, $2, $3, $4, $5)""",
                    uuid.uuid4(),
                    tenant,
                    user,
                    cid,
                    rnd.choice(folders[name]),
                )
    for user in [*users.values(), stranger]:
        pool = theirs if user == stranger else conversations
        chosen = rnd.sample(pool, rnd.randint(0, min(len(pool), 12)))
        if user != stranger and rnd.random() < 0.7:
            chosen.append(rnd.choice(theirs))  # a pin into another tenant: never listed
        kind = rnd.choice(["dense", "sparse", "repeated"])
        for n, cid in enumerate(chosen):
            position = {"dense": n, "sparse": n * 3 + rnd.randint(0, 2), "repeated": rnd.randint(0, 3)}[kind]
            await db.execute(
                """INSERT INTO conversation_pin (id, tenant_id, user_id, conversation_id, position)
                   VALUES ($1, $2, $3, $4, $5)""",
                uuid.uuid4(),
                tenant if cid in conversations else elsewhere,
                user,
                cid,
                position,
            )
    await db.execute("ANALYZE conversation; ANALYZE conversation_pin; ANALYZE participant")
    return {"tenant": tenant, "users": users, "folders": folders, "moments": moments}


def principals(world: dict[str, Any]) -> list[Principal]:
    users = world["users"]
    return [
        Principal(tenant_id=world["tenant"], user_id=users["admin"], role=Role.ADMIN, team=None),
        Principal(tenant_id=world["tenant"], user_id=users["member"], role=Role.MEMBER, team="red"),
        Principal(tenant_id=world["tenant"], user_id=users["manager"], role=Role.MANAGER, team="red"),
    ]


def filter_sets(world: dict[str, Any], principal: Principal) -> list[dict[str, Any]]:
    name = next(n for n, u in world["users"].items() if u == principal.user_id)
    everything = PageRelations(owners=True, members=True, member_users=True)
    return [
        {},
        {"relations": everything},
        {"relations": PageRelations(owners=True, members=False, member_users=False)},
        {"status": "ACTIVE"},
        {"status": "ARCHIVED"},
        {"status": "DELETED", "relations": everything},
        {"tags": ["x"]},
        {"tags": ["x", "y"]},
        {"metadata": MetadataFilter({"k": "a"}, few=True)},
        {"metadata": MetadataFilter({"k": "a"}, few=False), "status": "ACTIVE"},
        {"folder_id": world["folders"][name][0]},
        {"folder_id": world["folders"]["other"][0]},  # somebody else's folder: nothing of the caller's
        {"unfiled": True},
        {"unfiled": True, "status": "ACTIVE", "tags": ["y"], "relations": everything},
    ]


async def compare_everything(db: asyncpg.Connection, world: dict[str, Any], rnd: random.Random) -> int:
    """Every principal and filter set: the whole list, a page of a random size after every row's cursor and
    after forged cursors, and walks over all pages from every position. Returns the number of pages compared."""
    compared = 0

    async def both(
        principal: Principal, options: dict[str, Any], limit: int, after: Cursor | None
    ) -> list[Any]:
        nonlocal compared
        args = {"status": None, "tags": None, **options}
        old = await reference_page(db, principal, limit=limit, after=after, **args)
        new = await list_conversations(db, principal, limit=limit, after=after, pinned_first=True, **args)
        assert [plain(r) for r in new] == [plain(r) for r in old], (principal.role, options, limit, after)
        compared += 1
        return old

    for principal in principals(world):
        for options in filter_sets(world, principal):
            everything = await both(principal, options, 500, None)
            ranks = sorted({r["pin_rank"] for r in everything})
            cursors: list[Cursor | None] = [None, *(cursor_of(r) for r in everything)]
            # Forged cursors: ranks between, before and after the pins' and at the unpinned rank, any time and id.
            for rank in {-1, 0, 1, 2, 5, UNPINNED_RANK - 1, UNPINNED_RANK, *ranks}:
                cursors.append((rank, rnd.choice(world["moments"]), uuid.uuid4()))
            for after in cursors:
                await both(principal, options, rnd.randint(1, len(everything) + 2), after)
                # A walk to the end from here, page by page, each page after the last one's cursor.
                size = rnd.choice([1, 2, 3, rnd.randint(1, len(everything) + 1)])
                while True:
                    page = await both(principal, options, size, after)
                    if len(page) < size:
                        break
                    after = cursor_of(page[-1])
            # The walk from the start gives every row once, in the whole list's order.
            walked: list[Any] = []
            after = None
            while page := await both(principal, options, 4, after):
                walked += page
                after = cursor_of(page[-1])
            # (`page_users` is on each page's first row: compared page by page above, not here.)
            assert [without_users(r) for r in walked] == [without_users(r) for r in everything]
    return compared


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_pinned_first_page_is_the_left_join_it_replaced(dsn: str, loop: Loop, seed: int) -> None:
    async def work() -> tuple[int, dict[str, int]]:
        db = await connect(dsn)
        try:
            rnd = random.Random(seed)
            world = await seed_world(db, rnd)
            compared = await compare_everything(db, world, rnd)
            # Not vacuous: pinned rows, unpinned rows and cold rows were listed and compared.
            seen: dict[str, int] = {}
            for principal in principals(world):
                rows = await list_conversations(
                    db, principal, status=None, tags=None, limit=500, after=None, pinned_first=True
                )
                seen["pinned"] = seen.get("pinned", 0) + sum(r["pin_rank"] != UNPINNED_RANK for r in rows)
                seen["unpinned"] = seen.get("unpinned", 0) + sum(r["pin_rank"] == UNPINNED_RANK for r in rows)
                seen["cold"] = seen.get("cold", 0) + sum(r["cold"] for r in rows)
            return compared, seen
        finally:
            await db.close()

    compared, seen = loop.run(work())
    assert compared > 500 and all(seen[k] > 0 for k in ("pinned", "unpinned", "cold")), (compared, seen)


def test_an_out_of_range_rank_is_refused_as_before(dsn: str, loop: Loop) -> None:
    """A cursor's pin rank beyond integer range fails in the driver for both statements, as it did: nothing is
    listed from it. (The API refuses such a cursor before: test_a_forged_rank_is_the_clients_error.)"""

    async def work() -> None:
        db = await connect(dsn)
        try:
            world = await seed_world(db, random.Random(7))
            principal = principals(world)[0]
            after = (UNPINNED_RANK + 1, world["moments"][0], uuid.uuid4())
            with pytest.raises((asyncpg.DataError, OverflowError)):
                await reference_page(db, principal, status=None, tags=None, limit=5, after=after)
            with pytest.raises((asyncpg.DataError, OverflowError)):
                await list_conversations(
                    db, principal, status=None, tags=None, limit=5, after=after, pinned_first=True
                )
        finally:
            await db.close()

    loop.run(work())


# ---------------------------------------------------------------------------------------------------------------
# The plan in a tenant of 100,000 conversations: what the page reads follows the page, not the tenant.

BIG = 100_000
PAGE = 51  # `first: 50` asks for one more row, to know whether there is a next page


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("Plans", []):
        out += plan_nodes(child)
    return out


def conversation_number(tenant: str, n: str) -> str:
    """The id of the tenant's seeded conversation number `n` (SQL): in creation order, so the seed appends."""
    return f"(left({tenant}::uuid::text, 23) || '-' || lpad(to_hex({n}), 12, '0'))::uuid"


async def seed_big_tenant(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A tenant of BIG conversations, one a minute, every fifth owned by (and with a participant row of) its
    member, the rest by its admin; every 97th cold; ten pins each for the admin and the member, one of the
    member's of a conversation it cannot read. Set-based, in about two seconds."""
    async with db.transaction():
        # The search trigger (a vector of the empty title) and the foreign-key checks are the seed's cost, not
        # the page's: off for this transaction's writes, which are consistent by construction.
        await db.execute("SET LOCAL session_replication_role = replica")
        tenant = await db.fetchval(
            "INSERT INTO tenant (id, name) VALUES (gen_random_uuid(), 'big') RETURNING id"
        )
        admin, member = [
            await db.fetchval(
                "INSERT INTO app_user (tenant_id, email, role) VALUES ($1, $2, $3) RETURNING id",
                tenant,
                f"{role.lower()}-{tenant}@example.com",
                role,
            )
            for role in ("ADMIN", "MEMBER")
        ]
        await db.execute(
            f"""INSERT INTO conversation (id, tenant_id, owner_id, title, last_activity_at)
                SELECT {conversation_number("$1", "g")}, $1, CASE WHEN g % 5 = 0 THEN $3::uuid ELSE $2::uuid END,
                       '', timestamptz '2026-11-01' - g * interval '1 minute'
                FROM generate_series(1, $4::int) g""",
            tenant,
            admin,
            member,
            BIG,
        )
        await db.execute(
            f"""INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
                SELECT gen_random_uuid(), $1, {conversation_number("$1", "g")}, $2, 'OWNER'
                FROM generate_series(5, $3::int, 5) g""",
            tenant,
            member,
            BIG,
        )
        await db.execute(
            f"""INSERT INTO conversation_tier (conversation_id, tenant_id, document)
                SELECT {conversation_number("$1", "g")}, $1, '\\x00'::bytea FROM generate_series(1, $2::int, 97) g""",
            tenant,
            BIG,
        )
        for user, first in ((admin, 2), (member, 5)):
            # Pins 0..9 of conversations 7,915 apart; the member's last one of conversation 1 (the admin's).
            await db.execute(
                f"""INSERT INTO conversation_pin (id, tenant_id, user_id, conversation_id, position)
                    SELECT gen_random_uuid(), $1, $2,
                           {conversation_number("$1", "CASE WHEN g = 9 AND $3 = 5 THEN 1 ELSE g * 7915 + $3 END")}, g
                    FROM generate_series(0, 9) g""",
                tenant,
                user,
                first,
            )
    await db.execute(
        "ANALYZE conversation; ANALYZE participant; ANALYZE conversation_pin; ANALYZE conversation_tier"
    )
    return tenant, admin, member


def test_the_pinned_first_page_reads_a_page_not_the_tenant(dsn: str, loop: Loop) -> None:
    """An admin of a tenant of 100,000 conversations and a member owning 20,000 of them: on the first page, a
    page in the middle of the unpinned part and a page after a cursor in the pins, with and without the page's
    relations, custom and generic plans, no node reads or sorts more than a few pages of conversations, and
    `cold` and the participants are computed per page row at most (or `cold` hashed once). The replaced
    statement read and sorted all of them."""

    async def work() -> list[tuple[str, list[dict[str, Any]]]]:
        db = await connect(dsn)
        try:
            tenant, admin, member = await seed_big_tenant(db)
            plans = []
            for role, user in ((Role.ADMIN, admin), (Role.MEMBER, member)):
                principal = Principal(tenant_id=tenant, user_id=user, role=role, team=None)
                # The 10,000th readable unpinned conversation, and the pin at position 3.
                middle = await db.fetchrow(
                    """SELECT c.last_activity_at, c.id FROM conversation c WHERE c.tenant_id = $1
                         AND ($3 OR c.owner_id = $2)
                         AND NOT EXISTS (SELECT 1 FROM conversation_pin p WHERE p.conversation_id = c.id AND p.user_id = $2)
                       ORDER BY c.last_activity_at DESC, c.id DESC OFFSET 9999 LIMIT 1""",
                    tenant,
                    user,
                    role is Role.ADMIN,
                )
                pin = await db.fetchrow(
                    """SELECT c.last_activity_at, c.id FROM conversation_pin p JOIN conversation c ON c.id = p.conversation_id
                       WHERE p.user_id = $1 AND p.position = 3""",
                    user,
                )
                for label, after in (
                    ("first page", None),
                    ("middle of the unpinned", (UNPINNED_RANK, *middle)),
                    ("after a pin", (3, *pin)),
                ):
                    expected = await reference_page(
                        db, principal, status=None, tags=None, limit=PAGE, after=after
                    )
                    assert len(expected) == PAGE
                    if label == "after a pin":  # the rest of the pins, then the unpinned
                        pins = [4, 5, 6, 7, 8] if role is Role.MEMBER else [4, 5, 6, 7, 8, 9]
                        ranks = [r["pin_rank"] for r in expected]
                        assert ranks == pins + [UNPINNED_RANK] * (PAGE - len(pins))
                    for relations in (None, PageRelations(True, True, True)):
                        capture = Capture()
                        await list_conversations(
                            capture,  # type: ignore[arg-type]
                            principal,
                            status=None,
                            tags=None,
                            limit=PAGE,
                            after=after,
                            pinned_first=True,
                            relations=relations,
                        )
                        for mode in ("force_custom_plan", "force_generic_plan"):
                            await db.execute(f"SET plan_cache_mode = {mode}")
                            statement = await db.prepare(f"EXPLAIN (ANALYZE, FORMAT JSON) {capture.sql}")
                            plan = json.loads(await statement.fetchval(*capture.params))[0]["Plan"]
                            plans.append((f"{role.value} {label} {mode} {relations}", plan_nodes(plan)))
                            rows = await db.fetch(capture.sql, *capture.params)
                            assert [r["id"] for r in rows] == [r["id"] for r in expected]
                await db.execute("RESET plan_cache_mode")
            return plans
        finally:
            await db.close()

    plans = loop.run(work())
    assert len(plans) == 2 * 3 * 2 * 2
    for label, nodes in plans:
        assert any(node.get("Relation Name") == "conversation" for node in nodes), label
        for node in nodes:
            read = node["Actual Rows"] * node["Actual Loops"]
            if node.get("Relation Name") == "conversation":
                # The member's walk passes the admin's rows (4 in 5): about five rows for each of the member's.
                assert read <= 6 * PAGE, (label, node["Node Type"], read)
                assert node["Node Type"] != "Seq Scan", label
            if node["Node Type"] == "Sort":
                assert node["Plans"][0]["Actual Rows"] <= PAGE + 10, (label, node)
            if node.get("Relation Name") == "conversation_tier":
                assert node["Actual Loops"] <= PAGE, (label, node)  # per page row, or hashed once
            if node.get("Relation Name") == "participant" and node.get("Parent Relationship") == "SubPlan":
                assert node["Actual Loops"] <= PAGE, (label, node)


class Capture:
    """An executor that records the statement it is given."""

    sql: str
    params: tuple[Any, ...]

    async def fetch(self, sql: str, *params: Any) -> list[Any]:
        self.sql, self.params = sql, params
        return []


# ---------------------------------------------------------------------------------------------------------------
# End to end: `conversations(pinnedFirst: true)` over HTTP, with filters, for an admin and a member.

PIN = "mutation($c: ID!, $p: Int) { conversationPin(conversationId: $c, position: $p) { id } }"
ARCHIVE = "mutation($c: ID!) { conversationArchive(id: $c) { id } }"
REMOVE = "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }"
PAGE_QUERY = """query($first: Int, $after: String, $status: ConversationStatus, $tags: [String!]) {
  conversations(pinnedFirst: true, first: $first, after: $after, status: $status, tags: $tags) {
    totalCount edges { cursor node { title } } pageInfo { hasNextPage endCursor } } }"""


def walk(actor: Actor, first: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = actor.client.ok(PAGE_QUERY, {"first": first, "after": after, **filters})["conversations"]
        seen += [e["node"]["title"] for e in page["edges"]]
        assert len(seen) <= page["totalCount"]
        if not page["pageInfo"]["hasNextPage"]:
            assert len(seen) == page["totalCount"]
            return seen
        assert page["edges"][-1]["cursor"] == page["pageInfo"]["endCursor"]
        after = page["pageInfo"]["endCursor"]


def test_pinned_first_pages_over_http_with_filters(admin: Actor, make_user: Callable[..., Actor]) -> None:
    member = make_user(admin)
    ids = {f"c{n}": create_conversation(admin, f"c{n}", tags=["t"] if n % 2 else []) for n in range(8)}
    for name in ("c1", "c2", "c5", "c6"):
        join(admin, member, ids[name])
    admin.client.ok(PIN, {"c": ids["c2"]})
    admin.client.ok(PIN, {"c": ids["c5"]})
    admin.client.ok(PIN, {"c": ids["c0"], "p": 0})
    admin.client.ok(ARCHIVE, {"c": ids["c3"]})
    admin.client.ok(PIN, {"c": ids["c3"]})  # an archived pin: listed with the archived ones only
    member.client.ok(PIN, {"c": ids["c6"]})
    member.client.ok(PIN, {"c": ids["c1"]})
    member.client.ok(PIN, {"c": ids["c2"], "p": 0})
    admin.client.ok(REMOVE, {"c": ids["c1"], "u": member.user_id})  # the member's pin of c1 stays, unreadable

    active = ["c0", "c2", "c5", "c7", "c6", "c4", "c1"]  # `status` is ACTIVE unless given
    for first in (1, 2, 3, 7, 50):
        assert walk(admin, first) == active
        assert walk(admin, first, status="ARCHIVED") == ["c3"]
        assert walk(admin, first, tags=["t"]) == ["c5", "c7", "c1"]
        assert walk(member, first) == ["c2", "c6", "c5"]
        assert walk(member, first, tags=["t"]) == ["c5"]


def test_a_forged_rank_is_the_clients_error(admin: Actor) -> None:
    """A pinned-first cursor whose rank is outside the pin position's 32-bit range is BAD_USER_INPUT (it was an
    INTERNAL error from the database driver); the largest rank, the unpinned ones', is a valid cursor."""
    import base64

    def cursor(rank: int) -> str:
        values = [rank, "2026-01-01T00:00:00+00:00", str(uuid.uuid4())]
        return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")

    query = "query($a: String) { conversations(pinnedFirst: true, first: 2, after: $a) { edges { cursor } } }"
    for rank in (UNPINNED_RANK + 1, 2**40, 2**63 - 1, -(2**31) - 1):
        error = admin.client.error(query, {"a": cursor(rank)})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", (rank, error)
        assert error["extensions"]["argument"] == "after"
    assert admin.client.ok(query, {"a": cursor(UNPINNED_RANK)})["conversations"]["edges"] is not None
