"""Hostile input against erasure and imports (issue 12, items 5, 7, 13 and 15), through the public API."""

from __future__ import annotations

from typing import Any

from tests.harness import Actor, Loop
from tests.test_porting_import import sql
from threadline.ids import Kind, decode_id
from threadline.porting import erasure

ERASE = "mutation($u: ID!) { userErase(userId: $u) { userId placeholder { id } } }"
PROFILE = """mutation { rateLimitProfileCreate(input: {name: "tight", requestsPerWindow: 100000}) { id } }"""
ASSIGN = "mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) { requestsPerWindow } }"

# Tables keyed by a user: after erasure, no row of these may name the erased user (nor the placeholder,
# which would then collide with the next erased user's rows).
USER_KEYED = {
    "api_key": "user_id",
    "participant": "user_id",
    "invite": "user_id",
    "presence": "id",
    "typing_state": "user_id",
    "read_marker": "user_id",
    "rate_limit_bucket": "user_id",
    "rate_limit_assignment": "user_id",
}


# -- item 5: erasure covers everything keyed by a user --------------------------------------------------


def _busy_user(admin: Actor, make_user: Any, profile: str) -> Actor:
    """A member who made requests (so has rate-limit buckets), has presence and an assigned profile."""
    user = make_user(admin)
    user.client.ok("{ viewer { id } }")
    user.client.ok("mutation { presenceHeartbeat }")
    admin.client.ok(ASSIGN, {"u": user.user_id, "p": profile})
    return user


def test_erasing_users_one_after_another_erases_everything_keyed_by_them(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    profile = admin.client.ok(PROFILE)["rateLimitProfileCreate"]["id"]
    first, second = _busy_user(admin, make_user, profile), _busy_user(admin, make_user, profile)
    placeholder = admin.client.ok(ERASE, {"u": first.user_id})["userErase"]["placeholder"]["id"]
    # Before the fix the second erasure was INTERNAL: the first one had moved its buckets to the placeholder.
    assert admin.client.ok(ERASE, {"u": second.user_id})["userErase"]["userId"] == second.user_id

    ids = [decode_id(u, Kind.USER) for u in (first.user_id, second.user_id, placeholder)]
    left = {
        table: [r["n"] for r in sql(loop, dsn, f"SELECT count(*) AS n FROM {table} WHERE {column} = ANY($1::uuid[])", ids)]
        for table, column in USER_KEYED.items()
    }
    assert left == {table: [0] for table in USER_KEYED}
    # The admin who erased them keeps their own budget.
    assert sql(loop, dsn, "SELECT count(*) AS n FROM rate_limit_bucket WHERE user_id = $1", decode_id(admin.user_id, Kind.USER))[0]["n"] > 0


def test_every_reference_to_a_user_is_either_erased_or_anonymised_by_design(loop: Loop, dsn: str) -> None:
    """A new table keyed by a user must be classified in erasure (deleted, or attributed to the placeholder)."""
    rows = sql(
        loop,
        dsn,
        """SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
           FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.contype = 'f' AND c.confrelid = 'app_user'::regclass""",
    )
    references = {(r["tbl"].strip('"'), r["col"]) for r in rows}
    assert references == erasure.PERSONAL | erasure.ATTRIBUTED
    assert not erasure.PERSONAL & erasure.ATTRIBUTED
    assert {(t, c) for t, c in USER_KEYED.items()} <= erasure.PERSONAL
