"""Variables are bounded by the values graphql-core coerces, not only by bytes: each list item and input-object field
is coerced (~20 us apiece) before anything runs, so 200,000 filter objects (10 MB) held a process for 4.6 s before a
resolver could refuse them. THREADLINE_QUERY_MAX_INPUT_VALUES refuses such a request first; a JSON scalar is one
value whatever it holds (imports carry megabytes of it, under their own caps)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.harness import Actor
from tests.test_porting_import import IMPORT_REPORT

LIMIT = 10_000
CONVERSATIONS = "query($m: [MetadataFilterInput!]) { conversations(first: 1, metadata: $m) { totalCount } }"


def _errors(admin: Actor, query: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    return list(admin.client.execute(query, variables).get("errors") or [])


def test_a_list_of_input_objects_past_the_limit_is_refused_before_it_is_coerced(admin: Actor) -> None:
    # Each filter is three values (the object, its key, its value): 3,334 of them with the variable pass the limit.
    filters = [{"key": f"k{i}", "value": "v"} for i in range(LIMIT // 3 + 1)]
    (error,) = _errors(admin, CONVERSATIONS, {"m": filters})
    extensions = dict(error["extensions"])
    assert extensions.pop("actual") > LIMIT, error  # counted until past the limit, not on
    assert extensions == {"code": "BAD_USER_INPUT", "limitName": "inputValues", "limit": LIMIT}, error
    assert error["message"] == (
        f"The variables hold more than {LIMIT} values (list items and input fields; the limit)"
    )
    # Within it, the request runs (its resolver has a bound of its own on the filters it takes).
    within = _errors(admin, CONVERSATIONS, {"m": filters[:2]})
    assert all(e["extensions"].get("limitName") != "inputValues" for e in within), within


def test_unknown_fields_of_an_input_object_count(admin: Actor) -> None:
    """Coercion looks up each unknown key of an input object (and suggests names): they count as values too."""
    junk = {"key": "k", "value": "v", **{f"x{i}": i for i in range(LIMIT)}}
    (error,) = _errors(admin, CONVERSATIONS, {"m": [junk]})
    assert error["extensions"]["limitName"] == "inputValues", error


def test_a_json_scalar_is_one_value_however_much_it_holds(admin: Actor) -> None:
    ident = f"big-{uuid.uuid4()}"
    messages = [
        {"uuid": f"{ident}-{n}", "sender": "human" if n % 2 == 0 else "assistant", "text": f"message {n}"}
        for n in range(3000)
    ]  # ~12,000 JSON values inside one JSON scalar
    data = [{"uuid": ident, "name": ident, "chat_messages": messages}]
    report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}})[
        "conversationImportReport"
    ]
    assert (report["imported"], report["messageCount"]) == (1, 3000), report


def test_one_object_given_for_a_list_is_counted_as_the_list_it_is_coerced_into(admin: Actor) -> None:
    """graphql-core coerces a value that is not a list as a list of that one value: its keys count too (found in
    review: 600,000 keys in one object took 3.8 s of coercion, and the error quoted them back)."""
    lone = {"key": "k", "value": "v", **{f"x{i}": i for i in range(LIMIT)}}
    (error,) = _errors(admin, CONVERSATIONS, {"m": lone})
    assert error["extensions"]["limitName"] == "inputValues", error
    assert len(error["message"]) < 200
