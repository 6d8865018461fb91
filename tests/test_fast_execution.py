"""The fast executor gives exactly the stock executor's results: data, errors, their order and paths.

Three layers: an edge-case schema built here (nulls, bad values, exceptions, awaitables, abstract
types), the real schema on real threads (in-process, both executors on the same database), and
one request through the real server.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from http import HTTPStatus
from typing import Any, NewType

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Loop
from tests.harness import test_settings as settings_for
from threadline.graphql.context import Context
from threadline.graphql.fast_execution import FastExecutionContext, StockExecutionContext
from threadline.schema import build_schema


class PlanRecorder(FastExecutionContext):
    """Records, per selection bound in a request, its type and whether it runs compiled (so no equivalence
    test is vacuous)."""

    plans: list[tuple[str, bool]] = []

    def compiled_selection(self, parent_type: Any, grouped_field_set: Any) -> Any:
        plan = super().compiled_selection(parent_type, grouped_field_set)
        PlanRecorder.plans.append((parent_type.name, plan is not None))
        return plan

    def leaf_rows(self, object_type: Any, field_details_list: Any) -> Any:
        rows = super().leaf_rows(object_type, field_details_list)
        if rows is not None:  # a list of leaf-only objects completed in one loop (compiled_leaves.leaf_rows)
            PlanRecorder.plans.append((f"[{object_type.name}]", True))
        return rows


def as_json(result: Any) -> str:
    return json.dumps({"data": result.data, "errors": [e.formatted for e in result.errors or []]})


# --- an edge-case schema ------------------------------------------------------------------------------

Money = NewType("Money", Decimal)
# Custom scalars through the config's scalar_map (passing a class to strawberry.scalar() is deprecated).
EDGE_CONFIG = StrawberryConfig(
    scalar_map={
        Money: strawberry.scalar(
            name="Money", serialize=lambda v: f"{v:.2f} EUR", parse_value=Decimal, description="Money."
        )
    }
)


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Item(Named):
    id: strawberry.ID
    count: int
    ratio: float
    flag: bool
    color: Color
    at: datetime
    day: date
    price: Money
    tags: list[str]
    ids: list[strawberry.ID]
    scores: list[int | None]
    maybe: str | None
    child: Item | None = None

    @strawberry.field
    def greeting(self, name: str = "you") -> str:
        return f"hello {name} from {self.name}"


class ExplodingItem(Item):
    """An Item whose `count` raises when read (an error in the default resolver)."""

    @property
    def count(self) -> int:  # type: ignore[override]
        raise ValueError(f"count of {self.id} exploded")


def item(i: int, **changes: Any) -> Item:
    values: dict[str, Any] = {
        "id": strawberry.ID(f"i{i}"),
        "name": f"item {i} ✓",
        "count": i,
        "ratio": i / 3,
        "flag": i % 2 == 0,
        "color": Color.RED if i % 2 else Color.BLUE,
        "at": datetime(2026, 1, 1, 12, 0, i, 1000 * i, tzinfo=UTC),
        "day": date(2026, 1, 1 + i % 28),
        "price": Decimal(i) / 7,
        "tags": ["a", f"t{i}"],
        "ids": [strawberry.ID(f"i{j}") for j in range(i % 4)],
        "scores": [i, None, -i],
        "maybe": None if i % 3 else f"m{i}",
        "child": None,
    }
    values.update(changes)
    return Item(**values)


def exploding(i: int) -> Item:
    base = item(i)
    broken = object.__new__(ExplodingItem)
    broken.__dict__.update({k: v for k, v in base.__dict__.items() if k != "count"})
    return broken


async def later(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


class Soon:
    """An awaitable that is not a coroutine; a String field would happily serialize its str()."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return later(self.value).__await__()

    def __str__(self) -> str:
        return "not awaited"


class ItemError(Exception):
    """Not a builtin: a String field would serialize it as its message if it were not raised."""


class Lookalike:
    """Every attribute an Item has, but not an Item."""

    def __init__(self, source: Item) -> None:
        self.__dict__.update(source.__dict__)


BAD_ITEMS: dict[str, Any] = {
    "plain": lambda: [item(i) for i in range(6)],
    "tuple": lambda: tuple(item(i) for i in range(3)),
    "generator": lambda: (item(i) for i in range(3)),
    "nested": lambda: [item(i, child=item(10 + i)) for i in range(3)],
    "null item": lambda: [item(0), None, item(2)],
    "null in non-null field": lambda: [item(0), item(1, name=None), item(2)],
    "null in list of non-null": lambda: [item(0, tags=["a", None]), item(1)],
    "string where a list is expected": lambda: [item(0, tags="abc")],
    "set for a list": lambda: [item(0, tags={"only"})],
    "int out of range": lambda: [item(0), item(1, count=2**40)],
    "bool and float coerced": lambda: [item(0, count=True, ratio=2, name=3.5)],
    "ints at the 32-bit edges": lambda: [
        item(0, count=2**31 - 1),
        item(1, count=-(2**31)),
        item(2, count=2**31),
    ],
    "int subclass and numeric strings in an int field": lambda: [
        item(0, count=HTTPStatus.OK),
        item(1, count="7"),
    ],
    "ints where a bool is expected": lambda: [item(0, flag=1), item(1, flag=0), item(2, flag=2.0)],
    "object in a string field": lambda: [item(0, name=object())],
    "bytes in a string field": lambda: [item(0, maybe=b"raw")],
    "bad enum value": lambda: [item(0, color="green"), item(1)],
    "enum given by value": lambda: [item(0, color="blue")],
    "exception as a value": lambda: [item(0, maybe=ValueError("returned, not raised"))],
    "exception as an item": lambda: [item(0), ValueError("an item that is an error")],
    "raising attribute": lambda: [item(0), exploding(1), item(2)],
    "wrong type of item": lambda: [item(0), {"id": "dict"}],
    "awaitable items": lambda: [item(0), later(item(1)), later(None), item(3)],
    "awaitable attribute": lambda: [item(0, maybe=later("soon"))],
    "awaitable object attribute": lambda: [item(0, name=Soon("awaited"), maybe=Soon(None))],
    "awaitable in a list of strings": lambda: [item(0, tags=["a", Soon("b")])],
    "awaitable in a list of ints": lambda: [item(0, scores=[1, Soon(2)])],
    "custom exception as a value": lambda: [item(0, name=ItemError("returned, not raised"))],
    "lookalike of another type": lambda: [item(0), Lookalike(item(1))],
    "cast item": lambda: [item(0), strawberry.cast(Item, item(1)), item(2)],
    "datetimes outside UTC, naive and at the ends of time": lambda: [
        item(0, at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        item(1, at=datetime(2026, 1, 1, 12, 0, 0, 5)),
        item(2, at=datetime(1, 1, 1, tzinfo=UTC)),
        item(3, at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
    "datetime in a date field": lambda: [item(0, day=datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC))],
    "member of another enum": lambda: [item(0, color=HTTPStatus.OK), item(1)],
}


@strawberry.type
class EdgeQuery:
    @strawberry.field
    def items(self, case: str = "plain") -> list[Item]:
        return BAD_ITEMS[case]()  # type: ignore[no-any-return]

    @strawberry.field
    def nullable_items(self, case: str = "plain") -> list[Item | None] | None:
        return BAD_ITEMS[case]()  # type: ignore[no-any-return]

    @strawberry.field
    async def async_items(self, case: str = "plain") -> list[Item]:
        return BAD_ITEMS[case]()  # type: ignore[no-any-return]

    @strawberry.field
    def matrix(self) -> list[list[Item | None]]:
        return [[item(0), item(1, count="x")], [item(2)], []]

    @strawberry.field
    def named(self) -> list[Named]:
        return [item(0), item(1)]

    @strawberry.field
    def failing(self) -> list[Item] | None:
        raise RuntimeError("the whole list failed")


STOCK_EDGE = strawberry.Schema(
    EdgeQuery, types=[Item], config=EDGE_CONFIG, execution_context_class=StockExecutionContext
)
FAST_EDGE = strawberry.Schema(
    EdgeQuery, types=[Item], config=EDGE_CONFIG, execution_context_class=PlanRecorder
)

LEAVES = "id name count ratio flag color at day price tags ids scores maybe"

EDGE_QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "all leaves": (f"{{ items {{ {LEAVES} }} }}", {}),
    "aliases and __typename": ("{ items { key: id __typename n: name again: name name } }", {}),
    "named fragment": ("query { items { ...Leaves } } fragment Leaves on Item { id count tags }", {}),
    "fragment on the interface": ("{ items { ... on Named { name } ... on Item { id } } }", {}),
    "skip and include with variables": (
        "query($yes: Boolean!, $no: Boolean!) { items { id name @include(if: $yes) count @skip(if: $yes)"
        " maybe @include(if: $no) color @skip(if: $no) } }",
        {"yes": True, "no": False},
    ),
    "skip on the list itself": (
        "query($s: Boolean!) { items @skip(if: $s) { id } other: items { id } }",
        {"s": True},
    ),
    "nested objects mixed with leaves": (
        '{ items(case: "nested") { id child { id name child { id } } count } }',
        {},
    ),
    "field with arguments": ('{ items { id greeting(name: "x") } }', {}),
    "abstract list": ("{ named { __typename name ... on Item { id } } }", {}),
    "list of lists": ("{ matrix { id count } }", {}),
    "whole list fails": ("{ failing { id } after: items { id } }", {}),
    "async resolver": (f"{{ asyncItems {{ {LEAVES} }} }}", {}),
}
# Each bad value one level down, as the child of a plain item: lists of items whose fields reach objects are
# completed in one pass (compiled_trees), which hands the list back to per-item completion at the first value
# it does not take plainly; the answers must still be the stock ones.
for case, make in list(BAD_ITEMS.items()):
    if case != "generator":
        BAD_ITEMS[f"as children: {case}"] = lambda make=make: [
            item(40 + k, child=value) for k, value in enumerate(make())
        ]
for case in BAD_ITEMS:
    if case.startswith("as children: "):
        EDGE_QUERIES[f"items: {case}"] = (
            f"query($c: String!) {{ items(case: $c) {{ id child {{ {LEAVES} }} }}"
            f" n: nullableItems(case: $c) {{ id child {{ {LEAVES} child {{ id }} }} count }} }}",
            {"c": case},
        )
        continue
    EDGE_QUERIES[f"items: {case}"] = (
        f"query($c: String!) {{ items(case: $c) {{ {LEAVES} }} n: nullableItems(case: $c) {{ {LEAVES} }} }}",
        {"c": case},
    )


@pytest.mark.parametrize("name", list(EDGE_QUERIES))
def test_edge_cases_give_the_same_data_and_errors_with_both_executors(name: str) -> None:
    query, variables = EDGE_QUERIES[name]
    stock = asyncio.run(STOCK_EDGE.execute(query, variable_values=variables))
    fast = asyncio.run(FAST_EDGE.execute(query, variable_values=variables))
    assert as_json(fast) == as_json(stock)


@pytest.fixture
def plans() -> Iterator[list[tuple[str, bool]]]:
    PlanRecorder.plans = []
    yield PlanRecorder.plans


def test_lists_of_leaf_only_objects_take_the_fast_path(plans: list[tuple[str, bool]]) -> None:
    asyncio.run(FAST_EDGE.execute(f"{{ items {{ __typename {LEAVES} }} }}"))
    # The whole list in one loop: no selection compiled per item.
    assert plans == [("EdgeQuery", True), ("[Item]", True)]


def test_a_leaf_only_list_with_an_unusual_item_is_completed_item_by_item(
    plans: list[tuple[str, bool]],
) -> None:
    asyncio.run(FAST_EDGE.execute('{ items(case: "raising attribute") { id count } }'))
    assert plans == [("EdgeQuery", True), ("[Item]", True), ("Item", True)]


def test_selections_with_resolvers_arguments_objects_or_abstract_types_are_compiled_too(
    plans: list[tuple[str, bool]],
) -> None:
    for query in (
        '{ items { id greeting(name: "x") } }',
        "{ items { id child { id } } }",
        "{ named { name } }",
    ):
        asyncio.run(FAST_EDGE.execute(query))
    # Resolvers run through the stock execute_field inside the compiled code; an abstract list's items are
    # completed by the stock code until their object type is known, then by the object type's selection.
    # A list whose items' fields are plain leaves and plain objects (`child`, null on every plain item) is one
    # tree (compiled_trees): no selection compiled per item.
    assert plans == [
        ("EdgeQuery", True),
        ("Item", True),
        ("EdgeQuery", True),
        ("[Item]", True),
        ("EdgeQuery", True),
        ("Item", True),
    ]


def test_the_innermost_leaf_only_lists_of_nested_selections_take_the_fast_path(
    plans: list[tuple[str, bool]],
) -> None:
    asyncio.run(FAST_EDGE.execute("{ matrix { id } }"))
    # The outer list holds lists (stock); each of the three inner lists is completed in one loop.
    assert plans == [("EdgeQuery", True), ("[Item]", True), ("[Item]", True), ("[Item]", True)]


class Shout(SchemaExtension):
    """A schema extension that wraps every resolver (as tracing or permission extensions do)."""

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        result = _next(root, info, *args, **kwargs)
        return result.upper() if isinstance(result, str) else result


def test_schema_extensions_that_wrap_resolvers_turn_the_fast_path_off(plans: list[tuple[str, bool]]) -> None:
    stock = strawberry.Schema(
        EdgeQuery,
        types=[Item],
        config=EDGE_CONFIG,
        extensions=[Shout],
        execution_context_class=StockExecutionContext,
    )
    fast = strawberry.Schema(
        EdgeQuery, types=[Item], config=EDGE_CONFIG, extensions=[Shout], execution_context_class=PlanRecorder
    )
    query = f"{{ items {{ {LEAVES} }} }}"
    stock_result, fast_result = asyncio.run(stock.execute(query)), asyncio.run(fast.execute(query))
    assert as_json(fast_result) == as_json(stock_result)
    assert stock_result.data is not None and stock_result.data["items"][0]["name"] == "ITEM 0 ✓"
    assert plans == []


# --- the real schema, on real threads -----------------------------------------------------------------

THREAD_QUERIES: dict[str, str] = {
    "tree with every leaf": """query($r: ID!) { threadTree(rootId: $r) { totalCount nodes {
        id conversationId rootId parentId depth path childCount role content model createdAt editedAt
        deletedAt isDeleted } } }""",
    "tree with aliases, fragments and __typename": """query($r: ID!) { threadTree(rootId: $r) {
        nodes { __typename key: id ...Bits ... on Node { id } } root { id } } }
        fragment Bits on Message { depth p: path role }""",
    "tree with nested objects": """query($r: ID!) { threadTree(rootId: $r) { nodes {
        id usage { promptTokens completionTokens totalTokens } author { id email role } } } }""",
    "tree with skip and include": """query($r: ID!, $on: Boolean!) { threadTree(rootId: $r) { nodes {
        id content @include(if: $on) role @skip(if: $on) createdAt @skip(if: false) } } }""",
    "subtree from a reply, limited depth": """query($r: ID!, $b: ID!) {
        threadTree(rootId: $r, fromId: $b, maxDepth: 1) { totalCount nodes { id depth path } } }""",
    "nested replies": """query($r: ID!) { threadTree(rootId: $r, maxDepth: 0) { root { id replies {
        id content replies { id content replies { id depth path } } } } } }""",
    "conversation messages connection": """query($c: ID!) { conversation(id: $c) {
        messages(first: 10) { edges { cursor node { id role content } } pageInfo { hasNextPage } } } }""",
    "conversation list": "{ conversations(first: 5) { nodes { id title tags status messageCount } } }",
    "enum list": "{ errorCodes }",
    "a malformed id": 'query($r: ID!) { threadTree(rootId: "nope") { totalCount } other: threadTree(rootId: $r) { totalCount } }',
}


@pytest.fixture
def thread(admin: Actor) -> dict[str, str]:
    """A small branching thread with roles, usage, a model, an edit and a tombstone."""
    conversation = create_conversation(admin, "fast path", tags=["x", "y"])
    root = start_thread(admin, conversation, 'root ✓ "quoted"')
    a = reply(admin, root, "a", role="ASSISTANT")
    b = reply(admin, root, "b")
    reply(admin, a, "a.1")
    b1 = reply(admin, b, "b.1", role="SYSTEM")
    reply(admin, b1, "b.1.1", role="TOOL")
    admin.client.ok(
        """mutation($p: ID!) { messageReply(parentId: $p, input: {content: "with usage", role: ASSISTANT,
           model: "echo-1", usage: {promptTokens: 3, completionTokens: 4}}) { id } }""",
        {"p": a},
    )
    admin.client.ok('mutation($m: ID!) { messageEdit(id: $m, content: "b edited") { id } }', {"m": b})
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": b1})
    return {"r": root, "b": b, "c": conversation}


def run_real(loop: Loop, dsn: str, schema: Any, admin: Actor, query: str, variables: dict[str, Any]) -> Any:
    from threadline.db import Database

    async def work() -> Any:
        db = await Database.connect(dsn, 1, 2)
        try:
            context = Context(
                db=db,
                settings=settings_for(dsn),
                authorization=f"Bearer {admin.api_key}",
                request_id="same-for-both",
            )
            return await schema.execute(query, variable_values=variables, context_value=context)
        finally:
            await db.close()

    return loop.run(work())


def variables_for(query: str, thread: dict[str, str]) -> dict[str, Any]:
    wanted = {"r": thread["r"], "b": thread["b"], "c": thread["c"], "on": True}
    return {name: value for name, value in wanted.items() if f"${name}:" in query}


def test_thread_queries_give_the_same_json_with_both_executors(
    loop: Loop, dsn: str, admin: Actor, thread: dict[str, str], plans: list[tuple[str, bool]]
) -> None:
    stock_schema = build_schema(fast_execution=False)
    fast_schema = build_schema()
    fast_schema.execution_context_class = PlanRecorder
    for name, query in THREAD_QUERIES.items():
        variables = variables_for(query, thread)
        stock = as_json(run_real(loop, dsn, stock_schema, admin, query, variables))
        fast = as_json(run_real(loop, dsn, fast_schema, admin, query, variables))
        assert fast == stock, name
        assert '"data": null' not in stock or name == "a malformed id", stock
    assert ("Message", True) in plans and ("ThreadTree", True) in plans and ("[Message]", True) in plans


def test_thread_tree_over_http_equals_the_stock_executor(
    loop: Loop, dsn: str, admin: Actor, thread: dict[str, str]
) -> None:
    query = THREAD_QUERIES["tree with every leaf"]
    variables = variables_for(query, thread)
    stock = run_real(loop, dsn, build_schema(fast_execution=False), admin, query, variables)
    served = admin.client.execute(query, variables)
    assert json.dumps(served) == json.dumps({"data": stock.data})
    assert served["data"]["threadTree"]["totalCount"] == 7


@strawberry.type
class Ticks:
    @strawberry.subscription
    async def items(self) -> AsyncGenerator[list[Item], None]:
        for i in range(30):
            yield [item(i % 10, child=item(1)), item(2)]


def test_a_long_subscription_does_not_pile_up_per_event_caches() -> None:
    """Each event's executor is graphql-core's shallow copy of the subscription's; the caches keyed by field
    details lists (graphql-core's sub-field memo, one-pass list completions) got new keys every event, in
    dicts the copies shared with the subscription's executor: they grew without end."""
    executors: list[Any] = []

    class Watched(FastExecutionContext):
        def build_per_event_executor(self, payload: Any) -> Any:
            executors.append(self)
            return super().build_per_event_executor(payload)

    schema = strawberry.Schema(
        EdgeQuery, subscription=Ticks, config=EDGE_CONFIG, execution_context_class=Watched
    )
    stock = strawberry.Schema(
        EdgeQuery, subscription=Ticks, config=EDGE_CONFIG, execution_context_class=StockExecutionContext
    )
    document = "subscription { items { id name child { id count } } }"

    async def events(of: strawberry.Schema) -> list[str]:
        stream = await of.subscribe(document)
        return [as_json(result) async for result in stream]  # type: ignore[union-attr]

    fast_events = asyncio.run(events(schema))
    assert fast_events == asyncio.run(events(stock)) and len(fast_events) == 30
    subscription = executors[0]
    assert all(e is subscription for e in executors)
    assert len(subscription._relevant_sub_fields) <= 2
    assert len(subscription._leaf_rows) <= 1
