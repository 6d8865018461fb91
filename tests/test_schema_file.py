"""schema.graphql at the repo root is the truth: it must equal the served schema."""

from __future__ import annotations

from pathlib import Path

from tests.harness import Client
from threadline.schema import printed_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"


def test_schema_graphql_equals_the_served_schema() -> None:
    assert SCHEMA_FILE.read_text() == printed_schema(), (
        "schema.graphql is stale: run `threadline export-schema` and commit the result"
    )


def test_served_schema_is_introspectable_without_auth(anonymous: Client) -> None:
    data = anonymous.ok("{ __schema { queryType { name } types { name } } }")
    names = {t["name"] for t in data["__schema"]["types"]}
    assert {"Conversation", "Message", "ThreadTree", "ErrorCode", "Node"} <= names


def test_every_operation_carries_a_description(anonymous: Client) -> None:
    data = anonymous.ok(
        """{ __schema { queryType { fields { name description } } mutationType { fields { name description } }
             subscriptionType { fields { name description } } } }"""
    )
    schema = data["__schema"]
    for root in ("queryType", "mutationType", "subscriptionType"):
        if schema[root] is None:
            continue
        missing = [f["name"] for f in schema[root]["fields"] if not f["description"]]
        assert missing == [], f"{root} fields without description: {missing}"
