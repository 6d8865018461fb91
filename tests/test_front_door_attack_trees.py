"""More values a one-pass list completion (graphql/compiled_trees.py, compiled_leaves.py) may meet, each compared
with the stock executor's answer (tests/test_compiled_trees.py's attack schema)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.test_compiled_trees import CASES, FULL, compare, person, pet

EXTRA: dict[str, Any] = {
    "a list where an object is": lambda: [person(0), person(1, best=[pet(1)])],
    "a str where a list of objects is": lambda: [person(0), person(1, pets="ab")],
    "a str where a list of leaves is": lambda: [person(0), person(1, best=pet(1, toys="ab"))],
    "a tuple of leaves": lambda: [person(0, best=pet(1, toys=("a", "b")))],
    "an int in a list of strings": lambda: [person(0, best=pet(1, toys=["a", 1, True, 2.5]))],
    "a float where an int is": lambda: [person(0, boss=person(5, 0, age=7.0)), person(1, age=3.0)],
    "a fractional float where an int is": lambda: [person(0), person(1, boss=person(5, 0, age=7.5))],
    "bytes where a string is": lambda: [person(0), person(1, boss=person(5, 0, name=b"raw"))],
    "an int where an id is": lambda: [person(0, id=5), person(1, boss=person(5, 0, id=7))],
    "a datetime in another zone": lambda: [
        person(0, best=pet(1, born=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2)))))
    ],
    "a date where a datetime is": lambda: [person(0, best=pet(1, born=date(2026, 1, 1)))],
    "a str where a datetime is": lambda: [person(0), person(1, best=pet(1, born="2026-01-01"))],
    "a datetime subclass": lambda: [
        person(0, best=pet(1, born=type("D", (datetime,), {})(2026, 1, 1, tzinfo=UTC)))
    ],
    "an empty str and a huge int": lambda: [person(0, nick=""), person(1, boss=person(5, 0, age=2**31))],
    "a negative int at the edge": lambda: [person(0, age=-(2**31)), person(1, age=2**31 - 1)],
    "a bool where a string is": lambda: [person(0, nick=True)],
    "the same person twice": lambda: [p := person(0), p],
    "a person as its own boss": lambda: [p := person(0, 0), setattr(p, "boss", p) or p][1:],
}


@pytest.fixture(autouse=True)
def _extra_cases() -> Any:
    CASES.update(EXTRA)
    yield
    for name in EXTRA:
        CASES.pop(name, None)


@pytest.mark.parametrize("case", list(EXTRA))
def test_more_values_give_the_stock_answer(case: str) -> None:
    compare(f"query($c: String!) {{ people(case: $c) {{ {FULL} }} }}", {"c": case})
    compare(f"query($c: String!) {{ maybePeople(case: $c) {{ {FULL} }} }}", {"c": case})
    compare(f"query($c: String!) {{ group(case: $c) {{ members {{ {FULL} }} }} }}", {"c": case})
    # Leaves only (compiled_leaves.leaf_rows), and a tree of one level.
    compare("query($c: String!) { people(case: $c) { id name nick age __typename } }", {"c": case})
    compare("query($c: String!) { people(case: $c) { id best { name kind born toys } } }", {"c": case})


@pytest.mark.parametrize(
    "document",
    [
        "{ people { __typename } }",
        "{ people { t: __typename u: __typename } }",
        "{ people { ... on Person { ... on Person { id best { ... on Named { __typename n: name } } } } } }",
        "{ people { a: best { name } a: best { kind } b: boss { a: id } c: boss { a: id } } }",
        "{ people { id: name name: id boss { id: name } } }",
        "{ people { class: id def: name None: nick best { True: name } } }",
        "{ people { best { __typename } strict { __typename } pets { __typename } loose { __typename } } }",
        "{ people { friends { friends { friends { id } } } buddy { buddy { buddy { id } } } } }",
        "{ grid { __typename id boss { __typename } } }",
    ],
)
def test_more_documents_give_the_stock_answer(document: str) -> None:
    compare(document)
