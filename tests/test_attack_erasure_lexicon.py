"""The search lexicon (`search_term`: title and tag words, with their trigrams, for typo-tolerant search) keeps no
word that no title or tag of the tenant has any more: erased, purged, renamed or untagged conversations leave
nothing behind in it, while words other conversations (or other tenants) still use stay."""

from __future__ import annotations

import random
import string
from typing import Any

import asyncpg

from tests.api import create_conversation
from tests.harness import Actor, Loop
from threadline.db import Database
from threadline.porting.retention import purge_expired

SEARCH = """query($q: String!) { search(input: {query: $q}) { nodes { matchedBy conversation { id } } } }"""


def word() -> str:
    return "zq" + "".join(random.choice(string.ascii_lowercase) for _ in range(8)) + "xq"


def lexicon(loop: Loop, dsn: str, *words: str) -> list[tuple[str, str]]:
    """(tenant id, term) of the lexicon rows holding any of `words`, sorted."""

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(
                "SELECT tenant_id::text AS t, term FROM search_term WHERE term = ANY($1::text[]) ORDER BY 1, 2",
                list(words),
            )
        finally:
            await conn.close()

    return [(r["t"], r["term"]) for r in loop.run(read())]


def tenant_uuid(actor: Actor) -> str:
    from threadline.ids import Kind, decode_id

    return str(decode_id(actor.tenant_id, Kind.TENANT))


def test_erasing_a_user_leaves_their_titles_words_out_of_the_search_lexicon(
    admin: Actor, make_user: Any, make_tenant: Any, loop: Loop, dsn: str
) -> None:
    secret, shared = word(), word()
    erased = make_user(admin)
    create_conversation(erased, f"{secret} {shared} plans", tags=[f"{secret}tag"])
    # The same shared word in a colleague's title, and the secret one in another tenant: both stay.
    kept = create_conversation(admin, f"{shared} notes")
    other = make_tenant()
    create_conversation(other, f"{secret} elsewhere")
    ours = tenant_uuid(admin)
    assert lexicon(loop, dsn, secret, shared, f"{secret}tag") == sorted(
        [(ours, secret), (ours, shared), (ours, f"{secret}tag"), (tenant_uuid(other), secret)]
    )

    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": erased.user_id})

    assert lexicon(loop, dsn, secret, shared, f"{secret}tag") == sorted(
        [(ours, shared), (tenant_uuid(other), secret)]
    )
    # Typo tolerance still works for what is left.
    typo = shared[:-1] + ("a" if shared[-1] != "a" else "b")
    assert admin.client.ok(SEARCH, {"q": typo})["search"]["nodes"] == [
        {"matchedBy": "FUZZY", "conversation": {"id": kept}}
    ]


def test_retention_purges_leave_no_title_words_in_the_search_lexicon(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    secret = word()
    doomed = create_conversation(admin, f"{secret} old project")
    admin.client.ok("mutation { tenantRetentionSet(retentionDays: 1) { retentionDays } }")
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": doomed})

    async def expire_and_purge() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE conversation SET updated_at = now() - interval '3 days', "
                "last_activity_at = now() - interval '3 days' WHERE id = $1::uuid",
                doomed[4:],
            )
        finally:
            await conn.close()
        db = await Database.connect(dsn, 1, 2)
        try:
            return await purge_expired(db)
        finally:
            await db.close()

    assert lexicon(loop, dsn, secret) == [(tenant_uuid(admin), secret)]
    assert loop.run(expire_and_purge()) == 1
    assert lexicon(loop, dsn, secret) == []


def test_renaming_or_untagging_drops_words_no_other_title_or_tag_has(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    old, tag, both = word(), word(), word()
    first = create_conversation(admin, f"{old} {both}", tags=[tag])
    create_conversation(admin, f"{both} again")
    ours = tenant_uuid(admin)
    admin.client.ok(
        'mutation($c: ID!) { conversationUpdate(id: $c, input: {title: "renamed", tags: []}) { id } }',
        {"c": first},
    )
    assert lexicon(loop, dsn, old, tag, both) == [(ours, both)]
