"""Hostile reads of provenance: a page of conversations asking for their forks costs the same statements
however many conversations it holds."""

from __future__ import annotations

from tests.api import create_conversation, start_thread
from tests.harness import Actor

FORK = "mutation($m: ID!) { conversationFork(messageId: $m) { id } }"
PAGED = """query($c: ID!, $a: String) { conversation(id: $c) {
  forks(first: 2, after: $a) { nodes { id } pageInfo { hasNextPage endCursor } } } }"""
PAGE = """{ conversations(first: 50) { nodes { title forks(first: 2) { totalCount nodes { title } } } } }"""


def test_the_forks_of_a_page_of_conversations_cost_the_same_statements_however_many(admin: Actor) -> None:
    """`Conversation.forks` read each conversation's forks and their count alone: 50 conversations a page, 30
    aliases, 3,000 statements in one request."""

    def source(title: str, forks: int) -> tuple[str, list[str]]:
        conversation = create_conversation(admin, title)
        root = start_thread(admin, conversation, title)
        return conversation, [
            admin.client.ok(FORK, {"m": root})["conversationFork"]["id"] for _ in range(forks)
        ]

    a, forks_of_a = source("a", 3)
    few = admin.client.statements(PAGE)
    for n in range(6):
        source(f"b{n}", n % 3)
    nodes = admin.client.ok(PAGE)["conversations"]["nodes"]
    assert admin.client.statements(PAGE) == few
    forks = {n["title"]: n["forks"] for n in nodes if n["forks"]["totalCount"]}
    # Each source shows its own forks (named as it is), at most two of them, with the count of all.
    assert forks == {
        "a": {"totalCount": 3, "nodes": [{"title": "a"}] * 2},
        **{f"b{n}": {"totalCount": n % 3, "nodes": [{"title": f"b{n}"}] * (n % 3)} for n in (1, 2, 4, 5)},
    }
    # Paged with a cursor, newest first.
    seen: list[str] = []
    after = None
    while True:
        page = admin.client.ok(PAGED, {"c": a, "a": after})["conversation"]["forks"]
        seen += [n["id"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == forks_of_a[::-1]
