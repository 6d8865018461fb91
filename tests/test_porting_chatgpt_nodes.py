"""A ChatGPT conversation read from its text without decoding its messages (porting.chatgpt_nodes): the same nodes
as decoded JSON, decoded only when asked for; a node's digest follows its message's bytes and its parent, not its
children; a re-import of a grown export decodes only what it merges (issue 22 figure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness import Actor, Loop
from tests.test_import_merge import CHATGPT_V1, cli_import, outline, summary
from tests.test_import_merge_ahead import _import, first_export, grown, write
from tests.test_porting_import import assert_tree_is_consistent, sql
from threadline.ids import Kind, encode_id
from threadline.porting import chatgpt, chatgpt_nodes
from threadline.porting.chatgpt_nodes import LazyNodes


def read(conversation: dict[str, Any]) -> dict[str, Any]:
    value = chatgpt_nodes.read(json.dumps(conversation))
    assert value is not None
    return value


def test_nodes_read_from_the_text_are_the_decoded_ones_each_decoded_when_first_asked_for() -> None:
    conversation = first_export()
    value = read(conversation)
    mapping = value["mapping"]
    assert isinstance(mapping, LazyNodes)
    # The fields the reader reads, as decoded; the others are skipped.
    assert {k: v for k, v in value.items() if k != "mapping"} == {
        k: conversation.get(k)
        for k in (
            "conversation_id", "id", "title", "create_time", "update_time", "current_node", "default_model_slug",
            "is_archived",
        )
    }  # fmt: skip
    assert list(mapping) == list(conversation["mapping"]) and mapping.decoded == 0
    assert mapping["a-1"] == conversation["mapping"]["a-1"]
    assert mapping.get("a-1") == conversation["mapping"]["a-1"] and mapping.get("nope") is None
    assert mapping.decoded == 1
    assert mapping.whole() == conversation["mapping"] and mapping.decoded == 1
    assert dict(mapping.items()) == conversation["mapping"]
    assert mapping.decoded == len(conversation["mapping"])
    # What the importer makes of it is what it makes of the decoded JSON (but for the kind of digests).
    parsed, plain = chatgpt.parse(read(conversation)), chatgpt.parse(conversation)
    assert parsed.node_digests is not None and plain.node_digests is not None
    assert parsed.node_digests.keys() == plain.node_digests.keys()
    assert {len(d) for d in parsed.node_digests.values()} == {20}
    assert {len(d) for d in plain.node_digests.values()} == {16}
    parsed.node_digests = plain.node_digests = None
    assert parsed == plain


def test_a_node_digest_follows_its_message_bytes_and_parent_not_its_children() -> None:
    conversation = first_export()
    digests = chatgpt.node_digests(read(conversation)["mapping"])
    assert chatgpt_nodes.is_raw(digests) and not chatgpt_nodes.is_raw({"x": "0" * 16})

    more_children = first_export()
    more_children["mapping"]["a-2"]["children"].append("u-3")
    assert chatgpt.node_digests(read(more_children)["mapping"]) == digests

    edited = first_export()
    edited["mapping"]["a-1"]["message"]["content"]["parts"] = ["Paris, on the Seine."]
    changed = chatgpt.node_digests(read(edited)["mapping"])
    assert {k for k in digests if changed[k] != digests[k]} == {"a-1"}

    moved = first_export()
    moved["mapping"]["a-2"]["parent"] = "a-1"
    changed = chatgpt.node_digests(read(moved)["mapping"])
    assert {k for k in digests if changed[k] != digests[k]} == {"a-2"}

    # The same message written with other spacing is other bytes: it looks changed (merged whole, by source id).
    spaced = orjson.dumps(conversation).decode().replace('"Paris."', '"Paris."  ')
    value = chatgpt_nodes.read(spaced)
    assert value is not None and chatgpt.node_digests(value["mapping"])["a-1"] != digests["a-1"]


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '{"id": "c", "mapping": {"n": "not an object"}}',
        '{"id": "c", "mapping": {"n": {"message": null, "parent": 1e999}}}',
        '{"id": "c", "mapping": {"n": {"parent": ' + "[" * 3000 + "]" * 3000 + "}}}",
        '{"id": "c", "mapping": {"n": {"message": {"text": "\\ud800"}}}}',  # a lone surrogate escape
        '{"mapping": {}}',  # no id: the ordinary way says so, naming the keys it has
    ],
)
def test_text_that_is_not_a_mapping_of_node_objects_is_left_to_the_ordinary_decoder(text: str) -> None:
    assert chatgpt_nodes.read(text) is None


def test_a_conversation_without_a_mapping_reads_as_decoded() -> None:
    for text in ('{"id": "c", "mapping": null}', '{"id": "c", "title": "No mapping"}'):
        value = chatgpt_nodes.read(text)
        assert value is not None and value.get("mapping") is None
        assert chatgpt.parse(value) == chatgpt.parse(json.loads(text))


def test_repeated_keys_read_as_the_decoded_json_reads_them() -> None:
    text = (
        '{"id": "c", "mapping": {"n": {"message": {"a": 1}, "parent": null, "message": {"a": 2}},'
        ' "n": {"message": {"a": 3}}}, "id": "d"}'
    )
    value = chatgpt_nodes.read(text)
    assert value is not None
    assert value["id"] == "d"
    assert value["mapping"]["n"]["message"] == orjson.loads(text)["mapping"]["n"]["message"] == {"a": 3}


def test_a_reimport_of_a_grown_export_decodes_only_the_nodes_it_merges(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = first_export()
    assert summary(cli_import(dsn, admin, write(tmp_path / "v1.json", v1))) == (1, 0, 0, 0, 4, 0, 0)
    (source,) = sql(loop, dsn, "SELECT node_digests FROM import_source")
    # `threadline import` kept the digests of the messages' bytes.
    assert chatgpt_nodes.is_raw(json.loads(source["node_digests"]))
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    decoded: list[str] = []
    loads = chatgpt_nodes._loads

    def spy(raw: Any) -> Any:
        value = loads(raw)
        if isinstance(value, dict) and "author" in value:
            decoded.append(str(value["id"]))
        return value

    monkeypatch.setattr(chatgpt_nodes, "_loads", spy)
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", v2)))
    assert (merged["merged"], merged["messagesAdded"], merged["messagesUpdated"]) == (1, 2, 0)
    # The new nodes and the one they answer; of the fixture's seven nodes, the others are never decoded.
    assert sorted(decoded) == ["a-2", "a-3", "u-3"]
    assert outline(loop, dsn, cid) == [
        *CHATGPT_V1,
        (4, "USER", "Thanks!"),
        (5, "ASSISTANT", "You're welcome."),
    ]
    assert_tree_is_consistent(loop, dsn, cid)


def keep_decoded_digests(loop: Loop, dsn: str, conversation: dict[str, Any]) -> None:
    """The import identity's node digests as an import of the decoded conversation keeps them."""
    digests = chatgpt.node_digests(conversation["mapping"])
    sql(loop, dsn, "UPDATE import_source SET node_digests = $1", json.dumps(digests))


def test_digests_an_earlier_import_kept_of_decoded_messages_are_compared_as_such_then_replaced(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """Imports before the digests of the bytes (and imports of decoded JSON, through the API) kept digests of each
    message serialised again: a grown export is still merged from its new nodes only, and an edit is still found;
    the digests of the bytes are kept from then on."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    keep_decoded_digests(loop, dsn, v1)
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    assert summary(cli_import(dsn, admin, write(tmp_path / "v2.json", v2))) == (0, 1, 0, 0, 2, 2, 0)
    (source,) = sql(loop, dsn, "SELECT node_digests FROM import_source")
    assert json.loads(source["node_digests"]) == chatgpt.node_digests(read(v2)["mapping"])

    keep_decoded_digests(loop, dsn, v2)
    v3 = json.loads(json.dumps(v2))
    v3["mapping"]["a-1"]["message"]["content"]["parts"] = ["Paris, on the Seine."]
    assert summary(cli_import(dsn, admin, write(tmp_path / "v3.json", v3))) == (0, 1, 0, 0, 0, 0, 1)
    assert outline(loop, dsn, cid)[1] == (1, "ASSISTANT", "Paris, on the Seine.")
    assert_tree_is_consistent(loop, dsn, cid)


def test_a_merge_stores_the_digests_of_every_node_of_the_newer_export_and_only_those(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """A merge sends only the digests that changed and the nodes that are gone (bulk_repository.
    set_merged_sources): what is stored after it is still exactly the newer export's digests, whether nodes were
    added, removed or edited."""

    def stored() -> dict[str, str]:
        (source,) = sql(loop, dsn, "SELECT node_digests FROM import_source")
        return dict(json.loads(source["node_digests"]))

    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    v2 = grown(v1, "a-1", [("u-b", "user", "Another question"), ("a-b", "assistant", "Another answer")])
    assert summary(cli_import(dsn, admin, write(tmp_path / "v2.json", v2)))[4] == 2
    assert stored() == chatgpt.node_digests(read(v2)["mapping"])
    # The branch's last node is gone from the next export (hidden), and the main branch grew.
    v3 = grown(v2, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    del v3["mapping"]["a-b"]
    v3["mapping"]["u-b"]["children"] = []
    assert summary(cli_import(dsn, admin, write(tmp_path / "v3.json", v3)))[4] == 2
    assert stored() == chatgpt.node_digests(read(v3)["mapping"])
    assert "a-b" not in stored()
    # An edited node with a new one: the edit's digest replaces the earlier one.
    v4 = grown(v3, "a-3", [("u-4", "user", "One more")])
    v4["mapping"]["a-1"]["message"]["content"]["parts"] = ["Paris, on the Seine."]
    assert summary(cli_import(dsn, admin, write(tmp_path / "v4.json", v4)))[4:6] == (1, 1)
    assert stored() == chatgpt.node_digests(read(v4)["mapping"])
