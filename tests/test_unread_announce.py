"""A reply's unread.update to each participant (issue 15: addressed events stay cheap): every participant but the
writer gets exactly one, carrying their own count, and the reply's statements do not grow with the number of
participants (the updates go in one statement, `events.publish.deferring`). A `deferring` block inside another
of the same transaction adds to the outer batch."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness import Actor, Loop
from tests.test_streaming import REPLY, START, conversation, join, live
from tests.ws import VIEWER_EVENTS, WsClient
from threadline.ids import Kind, decode_id

MARK_READ = "mutation($r: ID!) { threadMarkRead(rootId: $r) { unreadCount } }"


def test_each_participant_gets_one_update_with_their_count_and_statements_do_not_grow(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    small, large = conversation(admin), conversation(admin)
    one = make_user(admin)
    join(admin, one, small)
    members = [make_user(admin) for _ in range(5)]
    for member in members:
        join(admin, member, large)
    small_root = admin.client.ok(START, {"c": small, "x": "root"})["threadStart"]["id"]
    root = admin.client.ok(START, {"c": large, "x": "root"})["threadStart"]["id"]
    admin.client.ok(REPLY, {"p": root, "x": "first"})
    members[0].client.ok(MARK_READ, {"r": root})  # 0 unread for them now, 2 for the others
    admin.client.ok(REPLY, {"p": small_root, "x": "first"})
    streams = [ws(member) for member in members]
    for member, stream in zip(members, streams, strict=True):
        stream.subscribe(VIEWER_EVENTS, {"s": live(member)})
    with_one = admin.client.statements(REPLY, {"p": small_root, "x": "second"})
    with_five = admin.client.statements(REPLY, {"p": root, "x": "second"})
    # One count statement and one events statement whatever the number of participants (was one INSERT each).
    assert with_five == with_one, (with_one, with_five)
    for n, stream in enumerate(streams):
        got = stream.events(2, ignore=("presence.update", "membership.changed"), timeout=30)
        assert [e["type"] for e in got] == ["thread.activity", "unread.update"], got
        assert got[1]["rootId"] == root
        assert got[1]["unreadCount"] == (1 if n == 0 else 3)
        stream.expect_quiet(0.3)  # each update once, only to its own user


def test_a_deferring_block_inside_another_adds_to_its_batch(admin: Actor, loop: Loop, dsn: str) -> None:
    from threadline.db import Database
    from threadline.events.kinds import EventType
    from threadline.events.publish import DEFERRED_ID, deferring, publish

    cid = decode_id(conversation(admin), Kind.CONVERSATION)
    tenant = decode_id(admin.tenant_id, Kind.TENANT)

    async def typing(tx: object, n: int) -> int:
        return await publish(
            tx,  # type: ignore[arg-type]
            tenant,
            EventType.TYPING_UPDATE,
            conversation_id=cid,
            payload={"userId": admin.user_id, "isTyping": n % 2 == 0, "n": n},
        )

    async def work() -> tuple[list[int], list[int]]:
        db = await Database.connect(dsn, 1, 1)
        try:
            async with db.transaction() as tx:
                async with deferring(tx):
                    returned = [await typing(tx, 0)]
                    async with deferring(tx):
                        returned += [await typing(tx, 1), await typing(tx, 2)]
                    # The inner block's end published nothing: still collected.
                    inside = await tx.fetchval(
                        "SELECT count(*) FROM stream_event WHERE conversation_id = $1", cid
                    )
                    returned.append(await typing(tx, 3))
                    assert inside == 0
            rows = await db.fetch(
                "SELECT payload FROM stream_event WHERE conversation_id = $1 ORDER BY id", cid
            )
        finally:
            await db.close()
        return returned, [int(r["payload"]["n"]) for r in rows]

    returned, published = loop.run(work())
    assert returned == [DEFERRED_ID] * 4
    assert published == [0, 1, 2, 3]  # once each, in the order announced, by the outer block


# The per-user formula unread_counts replaced: the reference the one-scan statement must agree with.
PER_USER = """SELECT u.user_id, (SELECT count(*) FROM message x
                 WHERE x.root_id = $2 AND x.seq > coalesce(rm.last_read_seq, 0)
                   AND x.author_id IS DISTINCT FROM u.user_id AND x.deleted_at IS NULL) AS unread_count
           FROM unnest($3::uuid[]) AS u(user_id)
           LEFT JOIN read_marker rm ON rm.root_id = $2 AND rm.user_id = u.user_id AND rm.tenant_id = $1"""


def test_unread_counts_agree_with_counting_per_user(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    import random

    from tests.test_threads import DELETE, MARK_READ
    from threadline.db import Database
    from threadline.threads.repository import unread_counts

    rng = random.Random(15)
    cid = conversation(admin)
    users = [admin, *(make_user(admin) for _ in range(5))]
    for user in users[1:]:
        join(admin, user, cid)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    other_root = admin.client.ok(START, {"c": cid, "x": "another thread"})["threadStart"]["id"]
    written = [root]
    tenant = decode_id(admin.tenant_id, Kind.TENANT)
    ids = [decode_id(u.user_id, Kind.USER) for u in users]
    # A user who never took part and one named twice: counted as asked, in the order asked.
    stranger = decode_id(make_user(admin).user_id, Kind.USER)
    asked = [*ids, stranger, ids[2]]

    def compare() -> list[tuple[object, int]]:
        async def both() -> tuple[list[tuple[object, int]], list[tuple[object, int]]]:
            db = await Database.connect(dsn, 1, 1)
            try:
                r = decode_id(root, Kind.MESSAGE)
                new = await unread_counts(db, tenant, r, asked)
                old = await db.fetch(PER_USER, tenant, r, asked)
            finally:
                await db.close()
            return [(x["user_id"], x["unread_count"]) for x in new], [
                (x["user_id"], x["unread_count"]) for x in old
            ]

        new, old = loop.run(both())
        assert new == old
        assert [u for u, _ in new] == asked
        return new

    compare()
    for step in range(60):
        writer = rng.choice(users)
        parent = rng.choice(written)
        written.append(writer.client.ok(REPLY, {"p": parent, "x": f"m{step}"})["messageReply"]["id"])
        if step % 7 == 3:
            rng.choice(users).client.ok(MARK_READ, {"r": root})  # markers at different places
        if step % 11 == 5:
            victim = rng.choice(written[1:])
            admin.client.ok(DELETE, {"m": victim})  # deleted messages are not unread
            written.remove(victim)  # and take no replies
        if step % 5 == 0:
            admin.client.ok(
                REPLY, {"p": other_root, "x": "elsewhere"}
            )  # another thread's messages never count
            compare()
    counts = dict(compare())
    assert len(set(counts.values())) > 2, counts  # the markers really differ
