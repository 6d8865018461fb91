"""Hostile share-link readers: what an anonymous client past its budget can still make the server do."""

from __future__ import annotations

import secrets

import asyncpg
import httpx

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Client, Loop, ServerThread
from tests.test_share_links import strict  # noqa: F401 - the share links' strict server, as a fixture

READ = "query($t: String!) { sharedConversation(token: $t) { title } }"


def token_windows(loop: Loop, dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM share_rate_window WHERE key LIKE 't:%'"))
        finally:
            await conn.close()

    return loop.run(count())


def test_a_client_past_its_address_budget_adds_no_window_per_guessed_token(
    strict: ServerThread,  # noqa: F811 - the fixture
    loop: Loop,
    dsn: str,
) -> None:
    """Every guess was counted against the guessed token's own window, whatever the address's: a refused client
    went on adding a row (kept a day) per guess, without credentials and as fast as it could send them."""
    with httpx.Client(base_url=strict.url) as http:
        codes = []
        for _ in range(50):
            body = http.post("/graphql", json={"query": READ, "variables": {"t": secrets.token_urlsafe(32)}})
            codes.append(body.json()["errors"][0]["extensions"]["code"])
        refused = http.get(f"/share/{secrets.token_urlsafe(32)}", headers={"accept": "application/json"})
    assert codes == ["NOT_FOUND"] * 5 + ["RATE_LIMITED"] * 45
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["extensions"]["budget"] == "shareReadsPerAddress"
    # The five guesses the address's budget allowed, and no more.
    assert token_windows(loop, dsn) == 5


def aliased_reads(aliases: int) -> str:
    fields = " ".join(
        f"m{n}: messages(first: 100) {{ totalCount nodes {{ content }} }}" for n in range(aliases)
    )
    return "query($t: String!) { sharedConversation(token: $t) { " + fields + " } }"


def test_aliases_of_a_shared_conversations_messages_read_them_once(admin: Actor, anonymous: Client) -> None:
    """One read of a link counts once against its rate windows, yet each alias of `messages` counted the whole
    share again (and read its page again): 30 counts of a large conversation per read, for anyone holding a link."""
    conversation = create_conversation(admin, "shared")
    root = start_thread(admin, conversation, "hello")
    for n in range(3):
        reply(admin, root, f"reply {n}")
    token = admin.client.ok(
        "mutation($c: ID!) { shareLinkCreate(conversationId: $c) { token } }", {"c": conversation}
    )["shareLinkCreate"]["token"]
    once = anonymous.raw(aliased_reads(1), {"t": token})
    many = anonymous.raw(aliased_reads(30), {"t": token})
    assert once["extensions"]["sqlStatements"] == many["extensions"]["sqlStatements"]
    pages = list(many["data"]["sharedConversation"].values())
    assert pages == [once["data"]["sharedConversation"]["m0"]] * 30
    assert pages[0]["totalCount"] == 4
