"""Links between conversations: conversationLink / conversationUnlink, Conversation.links and .backlinks
(batched), only between conversations the caller may read, bounded, and shown in exports."""

from __future__ import annotations

from collections.abc import Callable

from tests import harness
from tests.api import create_conversation, join
from tests.harness import Actor, Loop, ServerThread

LINK = """mutation($f: ID!, $t: ID!, $k: LinkKind!) {
  conversationLink(fromId: $f, toId: $t, kind: $k) { id kind fromId toId conversation { title } createdBy { id } } }"""
UNLINK = "mutation($id: ID!) { conversationUnlink(id: $id) }"
LINKS = """query($id: ID!) { conversation(id: $id) {
  links { totalCount nodes { kind conversation { title } } }
  backlinks { totalCount nodes { kind conversation { title } } } } }"""
LIST = """{ conversations(first: 50) { nodes { title
  links(first: 5) { nodes { kind conversation { title } } }
  backlinks(first: 5) { nodes { kind conversation { title } } } } } }"""


def link(actor: Actor, source: str, target: str, kind: str = "RELATED") -> str:
    return str(actor.client.ok(LINK, {"f": source, "t": target, "k": kind})["conversationLink"]["id"])


def seen(actor: Actor, conversation_id: str) -> dict[str, object]:
    data = actor.client.ok(LINKS, {"id": conversation_id})["conversation"]
    return {
        "links": [(n["kind"], n["conversation"]["title"]) for n in data["links"]["nodes"]],
        "backlinks": [(n["kind"], n["conversation"]["title"]) for n in data["backlinks"]["nodes"]],
        "counts": (data["links"]["totalCount"], data["backlinks"]["totalCount"]),
    }


def test_links_and_backlinks(admin: Actor) -> None:
    a, b, c = (create_conversation(admin, t) for t in ("a", "b", "c"))
    made = admin.client.ok(LINK, {"f": b, "t": a, "k": "CONTINUES"})["conversationLink"]
    assert made["kind"] == "CONTINUES"
    assert (made["fromId"], made["toId"]) == (b, a)
    assert made["conversation"] == {"title": "a"}
    assert made["createdBy"] == {"id": admin.user_id}
    link(admin, b, c, "CITES")
    link(admin, c, a, "DUPLICATE")
    # Linking again is the same link.
    assert link(admin, b, a, "CONTINUES") == made["id"]
    assert seen(admin, b) == {
        "links": [("CONTINUES", "a"), ("CITES", "c")],
        "backlinks": [],
        "counts": (2, 0),
    }
    assert seen(admin, a) == {
        "links": [],
        "backlinks": [("CONTINUES", "b"), ("DUPLICATE", "c")],
        "counts": (0, 2),
    }
    assert admin.client.ok(UNLINK, {"id": made["id"]}) == {"conversationUnlink": True}
    assert seen(admin, a)["backlinks"] == [("DUPLICATE", "c")]
    assert admin.client.code(UNLINK, {"id": made["id"]}) == "NOT_FOUND"


def test_links_of_a_whole_list_load_in_a_fixed_number_of_statements(admin: Actor) -> None:
    ids = [create_conversation(admin, f"c{n}") for n in range(3)]
    link(admin, ids[0], ids[1])
    few = admin.client.statements(LIST)
    more = [create_conversation(admin, f"d{n}") for n in range(6)]
    for n, cid in enumerate(more):
        link(admin, cid, ids[n % 3], "CITES")
        link(admin, ids[n % 3], cid)
    assert admin.client.statements(LIST) == few


def test_links_only_between_conversations_the_caller_may_read(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    mine = create_conversation(member, "mine")
    shared = create_conversation(admin, "shared")
    private = create_conversation(admin, "private")
    join(admin, member, shared)
    # Either end unreadable: NOT_FOUND, exactly as for an id that does not exist.
    assert member.client.code(LINK, {"f": mine, "t": private, "k": "CITES"}) == "NOT_FOUND"
    assert member.client.code(LINK, {"f": private, "t": mine, "k": "CITES"}) == "NOT_FOUND"
    missing = "cnv_" + "0" * 32
    assert member.client.code(LINK, {"f": mine, "t": missing, "k": "CITES"}) == "NOT_FOUND"
    link(member, mine, shared, "CITES")
    # A link the admin made to a conversation the member cannot read stays invisible to the member.
    link(admin, shared, private, "RELATED")
    hidden = link(admin, private, shared, "DUPLICATE")
    assert seen(member, shared) == {"links": [], "backlinks": [("CITES", "mine")], "counts": (0, 1)}
    assert member.client.code(UNLINK, {"id": hidden}) == "NOT_FOUND"
    node = member.client.ok("query($id: ID!) { node(id: $id) { id } }", {"id": hidden})
    assert node == {"node": None}
    # Another participant of `shared` can read neither `mine` nor `private`: no links at all for them.
    other = make_user(admin)
    join(admin, other, shared)
    assert seen(other, shared) == {"links": [], "backlinks": [], "counts": (0, 0)}
    # An admin reads the whole tenant, so sees them all.
    assert seen(admin, shared)["backlinks"] == [("CITES", "mine"), ("DUPLICATE", "private")]


def test_a_viewer_cannot_link_from_a_conversation_and_self_links_are_bad_input(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    viewer = make_user(admin)
    a, b = create_conversation(admin, "a"), create_conversation(admin, "b")
    join(admin, viewer, a, "VIEWER")
    join(admin, viewer, b, "VIEWER")
    assert viewer.client.code(LINK, {"f": a, "t": b, "k": "RELATED"}) == "FORBIDDEN"
    assert admin.client.code(LINK, {"f": a, "t": a, "k": "RELATED"}) == "BAD_USER_INPUT"


def test_links_from_one_conversation_are_bounded(dsn: str, loop: Loop) -> None:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, links_max=2))
    srv.start()
    try:
        actor = harness.create_admin(loop, dsn, srv.url)
        try:
            source, *targets = (create_conversation(actor, f"c{n}") for n in range(4))
            link(actor, source, targets[0])
            link(actor, source, targets[1])
            error = actor.client.error(LINK, {"f": source, "t": targets[2], "k": "RELATED"})
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "fromId", "limit": 2}
            # Links into it are not bounded by the source's count.
            link(actor, targets[2], source)
        finally:
            actor.client.close()
    finally:
        srv.stop()


EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
USER_EXPORT = "query($u: ID!) { userExport(userId: $u) }"
IMPORT = """mutation($d: JSON!) { conversationImportReport(input: {format: THREADLINE, data: $d}) {
  conversations { id title } warnings } }"""


def test_exports_show_the_links_the_exporter_may_read(admin: Actor, make_user: Callable[..., Actor]) -> None:
    member = make_user(admin)
    a, b = create_conversation(admin, "a"), create_conversation(admin, "b")
    private = create_conversation(admin, "private")
    join(admin, member, a)
    join(admin, member, b)
    forward = link(admin, a, b, "CONTINUES")
    backward = link(admin, private, a, "CITES")
    document = admin.client.ok(EXPORT, {"id": a})["conversationExport"]
    assert [
        (e["id"], e["kind"], e["direction"], e["from_id"], e["to_id"], e["title"]) for e in document["links"]
    ] == [
        (forward, "continues", "out", a, b, "b"),
        (backward, "cites", "in", private, a, "private"),
    ]
    # The member cannot read `private`: its link is not in their export.
    document = member.client.ok(EXPORT, {"id": a})["conversationExport"]
    assert [e["id"] for e in document["links"]] == [forward]


def test_a_user_export_reimported_keeps_the_links_between_its_conversations(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    first, second = create_conversation(member, "first"), create_conversation(member, "second")
    link(member, second, first, "CONTINUES")
    data = member.client.ok(USER_EXPORT, {"u": member.user_id})["userExport"]
    other = make_user(admin)
    report = other.client.ok(IMPORT, {"d": data})["conversationImportReport"]
    assert report["warnings"] == []
    ids = {c["title"]: c["id"] for c in report["conversations"]}
    assert set(ids) == {"first", "second"}
    assert seen(other, ids["second"]) == {
        "links": [("CONTINUES", "first")],
        "backlinks": [],
        "counts": (1, 0),
    }
    assert seen(other, ids["first"])["backlinks"] == [("CONTINUES", "second")]
    # Links to conversations the importer cannot read are warned about, not made.
    lone = create_conversation(member, "lone")
    link(member, lone, first, "CITES")
    document = member.client.ok(EXPORT, {"id": lone})["conversationExport"]
    report = other.client.ok(IMPORT, {"d": document})["conversationImportReport"]
    assert len(report["warnings"]) == 1
    assert "not restored: Conversation not found" in report["warnings"][0]


def test_erasing_the_user_who_made_a_link_keeps_the_link(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    a, b = create_conversation(admin, "a"), create_conversation(admin, "b")
    join(admin, member, a)
    join(admin, member, b)
    made = member.client.ok(LINK, {"f": a, "t": b, "k": "RELATED"})["conversationLink"]["id"]
    erased = admin.client.ok(
        "mutation($u: ID!) { userErase(userId: $u) { placeholder { id } } }", {"u": member.user_id}
    )["userErase"]
    data = admin.client.ok(
        "query($id: ID!) { conversation(id: $id) { links { nodes { id createdBy { id } } } } }", {"id": a}
    )
    assert data["conversation"]["links"]["nodes"] == [{"id": made, "createdBy": erased["placeholder"]}]
