"""The served schema explains itself: every type, field, argument, input field and enum value has a description;
the date and JSON scalars link their specifications; `search` pages with Relay's `first`/`after` arguments."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import get_introspection_query

from tests.api import create_conversation
from tests.harness import Actor

# The scalars the GraphQL specification defines (their descriptions are graphql-core's, not ours to write).
STANDARD_SCALARS = {"String", "Int", "Float", "Boolean", "ID"}

SEARCH = """query($i: ConversationSearchInput!, $first: Int, $after: String) {
  search(input: $i, first: $first, after: $after) {
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { node { conversation { title } } } } }"""


def introspect(actor: Actor) -> dict[str, Any]:
    """The served schema, deprecated elements included (a deprecated element needs a description too)."""
    query = get_introspection_query(descriptions=True, specified_by_url=True, input_value_deprecation=True)
    schema: dict[str, Any] = actor.client.ok(query)["__schema"]
    return schema


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Every element of the schema without a (non-blank) description, as `kind Type.name(argument)`."""
    missing: list[str] = []

    def check(description: str | None, what: str) -> None:
        if not (description or "").strip():
            missing.append(what)

    for type_ in schema["types"]:
        name = type_["name"]
        if name.startswith("__") or name in STANDARD_SCALARS:
            continue
        check(type_["description"], f"type {name}")
        for field in type_["fields"] or ():
            check(field["description"], f"field {name}.{field['name']}")
            for argument in field["args"]:
                check(argument["description"], f"argument {name}.{field['name']}({argument['name']})")
        for field in type_["inputFields"] or ():
            check(field["description"], f"input field {name}.{field['name']}")
        for value in type_["enumValues"] or ():
            check(value["description"], f"enum value {name}.{value['name']}")
    return missing


def test_every_type_field_argument_input_field_and_enum_value_is_described(admin: Actor) -> None:
    schema = introspect(admin)
    assert len(schema["types"]) > 50  # the walk saw the whole schema, not an empty answer
    assert undescribed(schema) == []


def test_root_types_and_connection_fields_are_described(admin: Actor) -> None:
    types = {t["name"]: t for t in introspect(admin)["types"]}
    for root in ("Query", "Mutation", "Subscription"):
        assert types[root]["description"]
    page_info = {f["name"]: f["description"] for f in types["PageInfo"]["fields"]}
    assert page_info["endCursor"].startswith("The cursor of the last item of this page, to pass as `after`")
    assert {f["name"] for f in types["ConversationConnection"]["fields"]} >= {"edges", "pageInfo"}


def test_date_time_date_and_json_link_their_specifications(admin: Actor) -> None:
    types = {t["name"]: t for t in introspect(admin)["types"]}
    assert {name: types[name]["specifiedByURL"] for name in ("DateTime", "Date", "JSON")} == {
        "DateTime": "https://scalars.graphql.org/andimarek/date-time",
        "Date": "https://scalars.graphql.org/andimarek/local-date",
        "JSON": "https://www.rfc-editor.org/rfc/rfc8259",
    }
    assert types["DateTime"]["description"].startswith(
        "An instant, as an RFC 3339 date-time with a time offset"
    )


def test_stream_events_document_their_no_cache_policy(admin: Actor) -> None:
    types = {t["name"]: t for t in introspect(admin)["types"]}
    event = types["ConversationStreamEvent"]
    assert event["kind"] == "INTERFACE"
    assert "no-cache" in event["description"]
    assert "id" not in {f["name"] for f in event["fields"]}


def test_search_takes_first_and_after_as_field_arguments_and_deprecates_them_in_its_input(
    admin: Actor,
) -> None:
    types = {t["name"]: t for t in introspect(admin)["types"]}
    (search,) = [f for f in types["Query"]["fields"] if f["name"] == "search"]
    assert [(a["name"], a["type"]["name"]) for a in search["args"]] == [
        ("input", None),  # ConversationSearchInput! (a NON_NULL wrapper)
        ("first", "Int"),
        ("after", "String"),
    ]
    inputs = {f["name"]: f for f in types["ConversationSearchInput"]["inputFields"]}
    for name in ("first", "after"):
        assert inputs[name]["isDeprecated"] is True
        assert inputs[name]["deprecationReason"].startswith(f"Pass `{name}` as an argument of `search`")


def test_search_pages_with_first_and_after_arguments(admin: Actor) -> None:
    for title in ("kestrel one", "kestrel two", "kestrel three"):
        create_conversation(admin, title)
    first = admin.client.ok(SEARCH, {"i": {"query": "kestrel"}, "first": 2})["search"]
    assert len(first["edges"]) == 2
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    rest = admin.client.ok(
        SEARCH, {"i": {"query": "kestrel"}, "first": 2, "after": first["pageInfo"]["endCursor"]}
    )
    assert len(rest["search"]["edges"]) == 1
    assert rest["search"]["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "endCursor": rest["search"]["pageInfo"]["endCursor"],
    }
    seen = [e["node"]["conversation"]["title"] for e in first["edges"] + rest["search"]["edges"]]
    assert sorted(seen) == ["kestrel one", "kestrel three", "kestrel two"]
    # The deprecated input fields still page the same way (clients written against them keep working).
    old = admin.client.ok(
        SEARCH, {"i": {"query": "kestrel", "first": 2, "after": first["pageInfo"]["endCursor"]}}
    )
    assert old["search"]["edges"] == rest["search"]["edges"]


def test_search_first_and_after_given_in_both_places_must_agree(admin: Actor) -> None:
    for title in ("osprey one", "osprey two"):
        create_conversation(admin, title)
    same = admin.client.ok(SEARCH, {"i": {"query": "osprey", "first": 1}, "first": 1})["search"]
    assert len(same["edges"]) == 1
    cursor = same["pageInfo"]["endCursor"]
    error = admin.client.error(SEARCH, {"i": {"query": "osprey", "first": 1}, "first": 2})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "first"
    assert error["message"] == (
        "`first` is given both as an argument of `search` and in its input, with different values; give it once, "
        "as the argument (`input.first` is deprecated)"
    )
    other = admin.client.ok(SEARCH, {"i": {"query": "osprey"}, "first": 2})["search"]["pageInfo"]["endCursor"]
    assert other != cursor
    error = admin.client.error(SEARCH, {"i": {"query": "osprey", "after": cursor}, "after": other})
    assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "after")


@pytest.mark.parametrize("first", [0, 100])
def test_search_first_argument_keeps_the_page_size_bounds(admin: Actor, first: int) -> None:
    create_conversation(admin, "heron")
    result = admin.client.ok(SEARCH, {"i": {"query": "heron"}, "first": first})["search"]
    assert len(result["edges"]) == min(first, 1)


def test_search_first_argument_over_the_cap_is_bad_user_input(admin: Actor) -> None:
    error = admin.client.error(SEARCH, {"i": {"query": "heron"}, "first": 101})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
