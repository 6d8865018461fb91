"""Compiled execution answers exactly what graphql-core's stock executor answers, byte for byte.

Three corpora go through both executors and their JSON is compared:

- every query document written in the test suite (string literals of tests/*.py that parse and validate
  as queries), run against seeded data on the real schema;
- documents fuzzed from the real schema (random fields, aliases, inline and named fragments, `__typename`,
  `@skip`/`@include`, arguments from the seeded ids, including ids of the wrong kind: NOT_FOUND);
- documents fuzzed from an edge-case schema built here, whose objects hold nulls in non-null fields,
  exceptions, awaitables, refused enum values and raising resolvers at every depth (non-null violations
  bubbling up, partial nulls, resolver errors), so that the error paths are exercised everywhere.

Then the fallbacks: what compiled code leaves to the stock executor, and that it does.
"""

from __future__ import annotations

import ast
import asyncio
import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import strawberry
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
    is_composite_type,
    is_enum_type,
    is_input_object_type,
    is_list_type,
    is_non_null_type,
    parse,
    validate,
)
from graphql.pyutils import Undefined
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop
from tests.harness import test_settings as settings_for
from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql import budget, compiled_plan, compiled_trees, ready
from threadline.graphql.context import Context
from threadline.graphql.fast_execution import FastExecutionContext, StockExecutionContext
from threadline.graphql.ready import NOT_READY, when_ready
from threadline.schema import build_schema

TESTS = Path(__file__).parent


class Recorder(FastExecutionContext):
    """Counts compiled selections and the fields the stock `execute_field` ran (so no test is vacuous)."""

    compiled: list[tuple[str, bool]] = []
    stock_fields: list[str] = []

    def compiled_selection(self, parent_type: Any, grouped_field_set: Any) -> Any:
        plan = super().compiled_selection(parent_type, grouped_field_set)
        Recorder.compiled.append((parent_type.name, plan is not None))
        return plan

    def execute_field(
        self, parent_type: Any, source: Any, field_details_list: Any, path: Any, pc: Any
    ) -> Any:
        Recorder.stock_fields.append(f"{parent_type.name}.{field_details_list[0].node.name.value}")
        return super().execute_field(parent_type, source, field_details_list, path, pc)


@pytest.fixture
def recorded() -> Iterator[type[Recorder]]:
    Recorder.compiled, Recorder.stock_fields = [], []
    yield Recorder


def settled(schema: strawberry.Schema, document: str) -> Any:
    """`schema.execute(document)` in a loop of its own, closed once the work graphql-core settles in the
    background (a failed branch's pending siblings, `settle_in_background`) is over: closing it at once
    would drop the coroutines of those not started yet ("coroutine ... was never awaited", either executor).
    """

    async def run() -> Any:
        result = await schema.execute(document)
        while pending := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.wait(pending)
        return result

    return asyncio.run(run())


def as_json(result: Any) -> str:
    """What the view sends: data and the formatted errors, in order."""
    return json.dumps({"data": result.data, "errors": [e.formatted for e in result.errors or []]})


# --- a fuzzer over any schema -----------------------------------------------------------------------------


class Fuzzer:
    """Random valid-looking query documents over `schema` (the caller validates and drops the rest)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rng: random.Random,
        argument: Callable[[str, GraphQLArgument], str | None],
        max_depth: int = 4,
    ) -> None:
        self.schema, self.rng, self.argument, self.max_depth = schema, rng, argument, max_depth
        self.fragments: list[str] = []
        self.count = 0

    def document(self) -> str:
        self.fragments = []
        query_type = self.schema.query_type
        assert query_type is not None
        body = self.selection(query_type, 0)
        return f"query Fuzzed {{ {body} }} " + " ".join(self.fragments)

    def _name(self) -> str:
        self.count += 1
        return f"a{self.count}"

    def _arguments(self, field: GraphQLField) -> str | None:
        parts = []
        for name, arg in field.args.items():
            required = is_non_null_type(arg.type) and arg.default_value is Undefined
            if not required and self.rng.random() < 0.7:
                continue
            value = self.argument(name, arg)
            if value is None:
                if required:
                    return None
                continue
            parts.append(f"{name}: {value}")
        return f"({', '.join(parts)})" if parts else ""

    def _directive(self) -> str:
        roll = self.rng.random()
        if roll < 0.05:
            return " @skip(if: true)"
        if roll < 0.1:
            return " @include(if: true)"
        if roll < 0.13:
            return " @include(if: false)"
        return ""

    def selection(self, parent: Any, depth: int) -> str:
        rng = self.rng
        picks: list[str] = []
        if isinstance(parent, GraphQLUnionType):
            picks.append("__typename")
        else:
            fields = list(parent.fields.items())
            rng.shuffle(fields)
            for name, field in fields[: rng.randint(1, 5)]:
                named = get_named_type(field.type)
                if is_composite_type(named) and depth >= self.max_depth:
                    continue
                arguments = self._arguments(field)
                if arguments is None:
                    continue
                alias = f"{self._name()}: " if rng.random() < 0.25 else ""
                sub = f" {{ {self.selection(named, depth + 1)} }}" if is_composite_type(named) else ""
                picks.append(f"{alias}{name}{arguments}{self._directive()}{sub}")
            if not picks:
                picks.append("__typename")
        if rng.random() < 0.3:
            picks.append(f"{self._name()}: __typename" if rng.random() < 0.5 else "__typename")
        if isinstance(parent, GraphQLInterfaceType | GraphQLUnionType) and depth < self.max_depth:
            for possible in self.schema.get_possible_types(parent)[:2]:
                picks.append(f"... on {possible.name} {{ {self.selection(possible, depth + 1)} }}")
        elif isinstance(parent, GraphQLObjectType) and depth < self.max_depth and rng.random() < 0.25:
            sub = self.selection(parent, depth + 1)
            if rng.random() < 0.5:
                fragment = f"F{self._name()}"
                self.fragments.append(f"fragment {fragment} on {parent.name} {{ {sub} }}")
                picks.append(f"...{fragment}")
            else:
                interfaces = parent.interfaces
                on = rng.choice(interfaces).name if interfaces and rng.random() < 0.5 else parent.name
                if on != parent.name:
                    interface = self.schema.get_type(on)
                    assert isinstance(interface, GraphQLInterfaceType)
                    sub = self.selection(interface, depth + 1)
                picks.append(f"... on {on} {{ {sub} }}")
        return " ".join(picks)


def valid_queries(schema: GraphQLSchema, documents: list[str]) -> list[str]:
    return [d for d in documents if not validate(schema, parse(d))]


# --- an edge-case schema: bad values and raising resolvers at every depth ---------------------------------


@strawberry.enum
class Mood(Enum):
    CALM = "calm"
    LOUD = "loud"


@strawberry.interface
class Thing:
    id: strawberry.ID


async def later(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


class Soon:
    """An awaitable that is not a coroutine (awaitable again on every read)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return later(self.value).__await__()


@strawberry.type
class Leaf(Thing):
    name: str
    count: int
    maybe: str | None
    tags: list[str]
    mood: Mood
    at: datetime
    child: Leaf | None
    strict: Leaf
    kids: list[Leaf]
    loose: list[Leaf | None] | None
    thing: Thing | None
    boxed: Typed | None
    fault: strawberry.Private[int]

    @strawberry.field
    def greeting(self, name: str = "you") -> str:
        if self.fault == 1:
            raise ThreadlineError(ErrorCode.NOT_FOUND, "leaf not found")
        return f"hello {name} from {self.id}"

    @strawberry.field
    async def later_child(self) -> Leaf | None:
        await asyncio.sleep(0)
        if self.fault == 2:
            raise RuntimeError("later failed")
        return self.child

    @strawberry.field
    async def must_later(self) -> Leaf:
        await asyncio.sleep(0)
        if self.fault in (2, 3):
            raise ThreadlineError(ErrorCode.NOT_FOUND, "later leaf not found")
        return self.strict

    @strawberry.field
    def must(self) -> Leaf:
        if self.fault == 3:
            raise ThreadlineError(ErrorCode.NOT_FOUND, "must not found")
        return self.strict

    # Async resolvers with a synchronous twin (graphql.ready): the twin gives what the resolver would, has
    # no value (NOT_READY) for fault 1 and raises for fault 2, where the resolver runs (and fails) instead.
    @strawberry.field
    @when_ready(lambda self, context: twin(self, self.child))
    async def ready_child(self) -> Leaf | None:
        return await resolved(self, self.child)

    @strawberry.field
    @when_ready(lambda self, context: twin(self, self.strict))
    async def ready_must(self) -> Leaf:
        return await resolved(self, self.strict)

    @strawberry.field
    @when_ready(lambda self, context: twin(self, self.kids))
    async def ready_kids(self) -> list[Leaf]:
        return await resolved(self, self.kids)

    @strawberry.field
    @when_ready(lambda self, context: twin(self, self.loose))
    async def ready_loose(self) -> list[Leaf | None] | None:
        return await resolved(self, self.loose)


TWINS = {"answered": 0, "resolved": 0}


def twin(leaf: Leaf, value: Any) -> Any:
    if leaf.fault == 1:
        return NOT_READY
    if leaf.fault == 2:
        raise RuntimeError("the twin failed")
    TWINS["answered"] += 1
    return value


async def resolved(leaf: Leaf, value: Any) -> Any:
    TWINS["resolved"] += 1
    await asyncio.sleep(0)
    if leaf.fault == 2:
        raise RuntimeError("the resolver failed")
    return value


@strawberry.type
class Other(Thing):
    label: str


@strawberry.type
class Typed:
    """A hand-written is_type_of: compiled code leaves its values to the stock executor."""

    value: str

    @classmethod
    def is_type_of(cls, obj: Any, info: Any) -> bool:
        return isinstance(obj, cls) and info.field_name != "refused"


BAD_VALUES: list[tuple[str, Any]] = [
    ("name", None),
    ("count", 2**40),
    ("count", "seven"),
    ("maybe", ValueError("returned, not raised")),
    ("maybe", Soon("awaited")),
    ("tags", ["a", None]),
    ("tags", "not a list"),
    ("mood", "calm"),
    ("mood", "green"),
    ("strict", None),
    ("kids", None),
    ("kids", [None]),
    ("loose", [None]),
    ("child", Soon(None)),
    ("boxed", Typed(value="boxed")),
    ("thing", "not a thing"),
]


def grow(rng: random.Random, depth: int, prefix: str) -> Leaf:
    """A random tree of leaves: mostly well-formed, with a bad value here and there."""
    kids = [grow(rng, depth - 1, f"{prefix}.{i}") for i in range(rng.randint(0, 2))] if depth else []
    leaf = Leaf(
        id=strawberry.ID(prefix),
        name=f"leaf {prefix} ✓",
        count=len(prefix),
        maybe=None if rng.random() < 0.3 else "m",
        tags=["x", prefix],
        mood=Mood.LOUD if rng.random() < 0.5 else Mood.CALM,
        at=datetime(2026, 1, 1, tzinfo=UTC),
        child=grow(rng, depth - 1, f"{prefix}c") if depth and rng.random() < 0.6 else None,
        strict=None,  # type: ignore[arg-type]  # set below
        kids=kids,
        loose=[*kids, None] if rng.random() < 0.5 else None,
        thing=Other(id=strawberry.ID(f"o{prefix}"), label="other") if rng.random() < 0.5 else None,
        boxed=Typed(value=prefix) if rng.random() < 0.3 else None,
        fault=rng.choice([0, 0, 0, 1, 2, 3]),
    )
    leaf.strict = Leaf(**{**leaf.__dict__, "id": strawberry.ID(f"{prefix}s"), "strict": leaf})
    if rng.random() < 0.25:
        attribute, value = rng.choice(BAD_VALUES)
        setattr(leaf, attribute, value)
    return leaf


@strawberry.type
class EdgeQuery:
    @strawberry.field
    def leaves(self, seed: int = 0) -> list[Leaf]:
        rng = random.Random(seed)
        return [grow(rng, 3, f"l{i}") for i in range(4)]

    @strawberry.field
    def maybe_leaves(self, seed: int = 0) -> list[Leaf | None] | None:
        rng = random.Random(seed)
        return [grow(rng, 2, f"m{i}") if i % 3 else None for i in range(4)]

    @strawberry.field
    async def one(self, seed: int = 0) -> Leaf:
        return grow(random.Random(seed), 3, "one")

    @strawberry.field
    def things(self, seed: int = 0) -> list[Thing]:
        rng = random.Random(seed)
        return [grow(rng, 1, "t0"), Other(id=strawberry.ID("t1"), label="other")]

    @strawberry.field
    def nameless(self) -> list[Leaf]:
        leaves = [grow(random.Random(i), 0, f"n{i}") for i in range(3)]
        leaves[1].name = None  # type: ignore[assignment]
        return leaves

    @strawberry.field
    def cast(self, seed: int = 0) -> list[Leaf]:
        """Leaves, one of them cast to Other (`strawberry.cast`): Leaf's is_type_of refuses it."""
        leaves = [grow(random.Random(seed), 1, f"k{i}") for i in range(3)]
        strawberry.cast(Other, leaves[1])
        return leaves

    @strawberry.field
    def typed(self) -> list[Typed]:
        return [Typed(value="a"), Typed(value="b")]

    @strawberry.field
    def refused(self) -> Typed | None:
        return Typed(value="refused by is_type_of")


STOCK_EDGE = strawberry.Schema(EdgeQuery, types=[Leaf, Other], execution_context_class=StockExecutionContext)
COMPILED_EDGE = strawberry.Schema(EdgeQuery, types=[Leaf, Other], execution_context_class=Recorder)


def edge_corpus(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    fuzzer = Fuzzer(
        STOCK_EDGE._schema, rng, lambda name, arg: str(rng.randint(0, 400)) if name == "seed" else None
    )
    return valid_queries(STOCK_EDGE._schema, [fuzzer.document() for _ in range(count)])


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_documents_over_bad_values_give_the_same_json_with_both_executors(
    seed: int, recorded: type[Recorder]
) -> None:
    documents = edge_corpus(150, seed)
    assert len(documents) > 100
    with_errors = 0
    for document in documents:
        stock = as_json(settled(STOCK_EDGE, document))
        compiled = as_json(settled(COMPILED_EDGE, document))
        assert compiled == stock, document
        with_errors += '"errors": []' not in stock
    # Not vacuous: errors happened, and selections ran compiled.
    assert with_errors > 20
    assert sum(ok for _, ok in recorded.compiled) > 100


@strawberry.type
class Racer:
    n: int

    @strawberry.field
    async def fails(self) -> str:
        """Fails after 3 - n turns of the event loop: the last racer first."""
        for _ in range(3 - self.n):
            await asyncio.sleep(0)
        raise RuntimeError(f"racer {self.n} failed")


async def fail_after(turns: int, name: str) -> str | None:
    for _ in range(turns):
        await asyncio.sleep(0)
    raise RuntimeError(f"{name} failed")


@strawberry.type
class RaceQuery:
    @strawberry.field
    async def first(self) -> str | None:
        return await fail_after(4, "first")

    @strawberry.field
    async def second(self) -> str | None:
        return await fail_after(1, "second")

    @strawberry.field
    def racers(self) -> list[Racer] | None:
        return [Racer(n=n) for n in range(3)]


@pytest.mark.parametrize("context_class", [StockExecutionContext, FastExecutionContext])
def test_errors_come_in_document_order_and_a_nulled_list_reports_its_first_failed_item(
    context_class: type[StockExecutionContext],
) -> None:
    """Whatever finishes first: `second` fails before `first`, and racer 2 before racer 1 before racer 0
    (graphql-core would list them so, and report racer 2's error for the nulled list)."""
    schema = strawberry.Schema(RaceQuery, execution_context_class=context_class)
    result = settled(schema, "{ first second racers { n fails } }")
    assert result.data == {"first": None, "second": None, "racers": None}
    assert [(e.message, e.path) for e in result.errors] == [
        ("first failed", ["first"]),
        ("second failed", ["second"]),
        ("racer 0 failed", ["racers", 0, "fails"]),
    ]


EDGE_CASES = {
    "non-null violation bubbles through plain objects": "{ leaves(seed: 7) { id strict { id strict { name count } } } }",
    "resolver errors at depth": "{ leaves(seed: 3) { greeting child { greeting must { id greeting } } } }",
    "async resolvers in lists": "{ leaves(seed: 5) { id laterChild { id laterChild { id name } } } }",
    "partial nulls in a nullable list": "{ maybeLeaves(seed: 2) { id loose { id name } kids { id } } }",
    "async non-null failures null the nearest nullable item": (
        "{ maybeLeaves(seed: ) { id mustLater { id } } loose: leaves(seed: ) { loose { mustLater { id } } } }"
    ),
    "interfaces": "{ things { __typename id ... on Leaf { name kids { id } } ... on Other { label } } }",
    "aliases and fragments": "query { a: one { ...L b: kids { ...L } } } fragment L on Leaf { id n: name __typename }",
    "hand-written is_type_of": "{ typed { value } refused { value } }",
    "an instance cast to another type": "{ cast(seed: ) { id name child { id } } }",
    "synchronous twins at depth": (
        "{ leaves(seed: ) { id readyChild { id readyMust { name readyKids { id } } } readyLoose { id } } }"
    ),
    "synchronous twins next to async resolvers": (
        "{ maybeLeaves(seed: ) { laterChild { id } readyKids { mustLater { id } readyChild { name } } } }"
    ),
}


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_give_the_same_json_with_both_executors(name: str) -> None:
    for seed in range(20):
        document = EDGE_CASES[name].replace("seed: ", f"seed: {seed}")
        stock = as_json(settled(STOCK_EDGE, document))
        assert as_json(settled(COMPILED_EDGE, document)) == stock, (name, seed)


# --- fallbacks ---------------------------------------------------------------------------------------------


def test_plain_fields_are_read_inline_and_only_resolvers_run_through_execute_field(
    recorded: type[Recorder],
) -> None:
    settled(COMPILED_EDGE, "{ one(seed: 1) { id name tags mood child { id } greeting } }")
    assert set(recorded.stock_fields) == {"EdgeQuery.one", "Leaf.greeting"}


def test_resolvers_without_arguments_are_called_directly_and_the_others_through_execute_field(
    recorded: type[Recorder],
) -> None:
    for document in (
        "{ one(seed: 6) { laterChild { id } must { id laterChild { id } } } }",
        "{ leaves(seed: 1) { id greeting } }",
    ):
        stock = as_json(settled(STOCK_EDGE, document))
        assert as_json(settled(COMPILED_EDGE, document)) == stock
    # `one`, `leaves` and `greeting` take arguments: strawberry's wrapper converts them.
    assert set(recorded.stock_fields) == {"EdgeQuery.one", "EdgeQuery.leaves", "Leaf.greeting"}


def twin_run(schema: strawberry.Schema, document: str) -> tuple[str, int, int]:
    """(JSON, twins that answered, resolvers that ran)."""
    TWINS["answered"] = TWINS["resolved"] = 0
    result = as_json(settled(schema, document))
    return result, TWINS["answered"], TWINS["resolved"]


def test_synchronous_twins_answer_where_they_can_and_the_resolver_runs_where_they_cannot() -> None:
    runs = []
    for seed in range(60):
        document = (
            f"{{ leaves(seed: {seed}) {{ id readyChild {{ id }} readyKids {{ id readyChild {{ id }} }} }} }}"
        )
        stock, answered, resolved_by_stock = twin_run(STOCK_EDGE, document)
        assert answered == 0 and resolved_by_stock > 0  # the stock executor never asks the twins
        compiled, answered, resolved = twin_run(COMPILED_EDGE, document)
        assert compiled == stock, document
        runs.append(('"errors": []' in stock, answered, resolved, resolved_by_stock))
    # Without errors, the twins answered most fields and the resolvers ran only where a twin had no value
    # (fault 1) or failed (fault 2).
    clean = [run for run in runs if run[0]]
    assert len(clean) > 5
    assert all(
        answered > 0 and resolved < resolved_by_stock for _, answered, resolved, resolved_by_stock in clean
    )
    assert any(0 < resolved for _, _, resolved, _ in clean)
    # With an error, the query ran once more without twins (every resolver ran again): the stock answer.
    failed = [run for run in runs if not run[0] and run[1] > 0]
    assert failed
    assert all(resolved >= resolved_by_stock for _, _, resolved, resolved_by_stock in failed)


def test_a_query_run_again_without_twins_starts_from_the_output_budget_it_had() -> None:
    token = budget._BUDGET.set(budget.OutputBudget(max_messages=10, max_bytes=1000))
    try:
        found = budget.current()
        assert found is not None
        saved = budget.snapshot()
        found.charge(8, 100)
        with pytest.raises(ThreadlineError):
            found.charge(5, 0)
        budget.restore(saved)
        assert (found.messages, found.bytes, found.exceeded) == (0, 0, None)
        found.charge(8, 100)  # the same charges pass again
    finally:
        budget._BUDGET.reset(token)


def test_a_plain_field_holding_something_unusual_falls_back_to_the_stock_executor(
    recorded: type[Recorder],
) -> None:
    document = "{ nameless { id name } maybe: maybeLeaves(seed: 1) { id } }"
    stock = as_json(settled(STOCK_EDGE, document))
    assert as_json(settled(COMPILED_EDGE, document)) == stock
    assert '"data": null' in stock and "Cannot return null for non-nullable field Leaf.name." in stock
    assert '"path": ["nameless", 1, "name"]' in stock
    # Only the null in a non-null field went through the stock execute_field (`nameless`, without arguments,
    # is called directly); the error nulls the whole response before `maybe` runs, as with the stock executor.
    assert recorded.stock_fields == ["Leaf.name"]


def test_types_with_a_hand_written_is_type_of_and_abstract_fields_take_the_stock_path(
    recorded: type[Recorder],
) -> None:
    document = "{ one(seed: 4) { thing { id } boxed { value } } typed { value } refused { value } }"
    stock = as_json(settled(STOCK_EDGE, document))
    assert as_json(settled(COMPILED_EDGE, document)) == stock
    assert "Expected value of type 'Typed' but got" in stock  # `refused`: its is_type_of read the info
    # An interface (its object type is known only once resolved) and a type with its own is_type_of.
    assert {"Leaf.thing", "Leaf.boxed"} <= set(recorded.stock_fields)


def test_a_selection_the_compiler_cannot_express_runs_on_the_stock_executor(
    recorded: type[Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> Any:
        raise NotImplementedError("not compiled")

    monkeypatch.setattr("threadline.graphql.fast_execution.compile_selection", refuse)
    document = "query Unseen { leaves(seed: 9) { id name greeting strict { id } } }"
    stock = as_json(settled(STOCK_EDGE, document))
    assert as_json(settled(COMPILED_EDGE, document)) == stock
    assert recorded.compiled and not any(ok for _, ok in recorded.compiled)
    assert "Leaf.name" in recorded.stock_fields


class Shout(SchemaExtension):
    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        result = _next(root, info, *args, **kwargs)
        return result.upper() if isinstance(result, str) else result


def test_schema_extensions_that_wrap_resolvers_turn_compiled_execution_off(recorded: type[Recorder]) -> None:
    stock = strawberry.Schema(
        EdgeQuery, types=[Leaf, Other], extensions=[Shout], execution_context_class=StockExecutionContext
    )
    compiled = strawberry.Schema(
        EdgeQuery, types=[Leaf, Other], extensions=[Shout], execution_context_class=Recorder
    )
    document = "{ one(seed: 2) { id name kids { name } } }"
    assert as_json(settled(compiled, document)) == as_json(settled(stock, document))
    assert recorded.compiled == []


def test_compiled_selections_are_cached_across_requests_per_operation(recorded: type[Recorder]) -> None:
    calls: list[Any] = []
    real = compiled_plan.compile_selection

    def counting(*args: Any) -> Any:
        calls.append(args[1].name)
        return real(*args)

    real_tree = compiled_trees._compile

    def counting_trees(*args: Any) -> Any:
        calls.append(f"[{args[1].name}]")
        return real_tree(*args)

    # The list of leaves is one tree (compiled_trees); `Query` and the stock-path fallbacks are selections.
    document = "query Cached { leaves(seed: 11) { id name kids { id name } child { id } } }"
    import threadline.graphql.fast_execution as fast

    original = fast.compile_selection
    compiled_trees._TREES.clear()  # trees are cached by shape across documents: this one compiles afresh
    fast.compile_selection = counting  # type: ignore[assignment]
    compiled_trees._compile = counting_trees  # type: ignore[assignment]
    try:
        first = as_json(settled(COMPILED_EDGE, document))
        compiled_once = len(calls)
        second = as_json(settled(COMPILED_EDGE, document))
    finally:
        fast.compile_selection = original  # type: ignore[assignment]
        compiled_trees._compile = real_tree  # type: ignore[assignment]
    assert first == second
    assert compiled_once >= 2 and "[Leaf]" in calls and len(calls) == compiled_once


# --- the real schema, on seeded data ---------------------------------------------------------------------------

SERVED = build_schema()
STOCK = build_schema(fast_execution=False)
COMPILED = build_schema()
COMPILED.execution_context_class = Recorder


def suite_documents() -> list[str]:
    """Every string literal of the test suite that is a GraphQL document of queries only."""
    found: set[str] = set()
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str) and "{" in node.value):
                continue
            try:
                document = parse(node.value)
            except Exception:  # noqa: BLE001, S112 - not GraphQL
                continue
            operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
            if operations and all(o.operation is OperationType.QUERY for o in operations):
                found.add(node.value)
    return sorted(found)


def seeded(admin: Actor, member: Actor) -> dict[str, list[str]]:
    """Two conversations with a member, branching threads, usage, an edit and a tombstone."""
    first = create_conversation(admin, "compiled one", tags=["x", "y"])
    second = create_conversation(admin, "compiled two")
    join(admin, member, first, "VIEWER")
    root = start_thread(admin, first, 'root ✓ "quoted"')
    a = reply(admin, root, "a", role="ASSISTANT")
    b = reply(admin, root, "b")
    a1 = reply(admin, a, "a.1")
    b1 = reply(admin, b, "b.1", role="SYSTEM")
    admin.client.ok(
        """mutation($p: ID!) { messageReply(parentId: $p, input: {content: "with usage", role: ASSISTANT,
           model: "echo-1", usage: {promptTokens: 3, completionTokens: 4}}) { id } }""",
        {"p": a},
    )
    admin.client.ok('mutation($m: ID!) { messageEdit(id: $m, content: "b edited") { id } }', {"m": b})
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": b1})
    other_root = start_thread(admin, second, "second root")
    threads = admin.client.ok(
        "query($c: ID!) { conversation(id: $c) { threads { nodes { id } } } }", {"c": first}
    )["conversation"]["threads"]["nodes"]
    return {
        "conversation": [first, second],
        "message": [root, a, b, a1, b1, other_root],
        "user": [admin.user_id, member.user_id],
        "thread": [t["id"] for t in threads],
    }


class Ids:
    """Argument and variable values from the seeded ids: by name when it says the kind, else any kind."""

    def __init__(self, ids: dict[str, list[str]], seed: int) -> None:
        self.ids, self.rng = ids, random.Random(seed)
        self.everything = [i for values in ids.values() for i in values]

    def id_for(self, name: str) -> str:
        lowered = name.lower()
        for kind, words in (
            ("conversation", ("conversation", "conv", "cid")),
            ("message", ("message", "root", "parent", "from", "msg")),
            ("user", ("user", "owner", "member")),
            ("thread", ("thread",)),
        ):
            if any(w in lowered for w in words) or lowered in {kind[0], f"{kind[0]}id"}:
                if self.rng.random() < 0.9:
                    return self.rng.choice(self.ids[kind])
        return self.rng.choice(self.everything)

    def literal(self, name: str, type_: Any) -> str | None:
        value = self.value(name, type_)
        if value is _NONE:
            return None
        return str(value) if isinstance(value, EnumValue) else json.dumps(value)

    def value(self, name: str, type_: Any) -> Any:
        inner = type_.of_type if is_non_null_type(type_) else type_
        if is_list_type(inner):
            item = self.value(name, inner.of_type)
            return _NONE if item is _NONE else [item]
        if is_input_object_type(inner) or isinstance(inner, GraphQLInputObjectType):
            return _NONE
        if is_enum_type(inner):
            assert isinstance(inner, GraphQLEnumType)
            return EnumValue(next(iter(inner.values)))
        return {
            "ID": lambda: self.id_for(name),
            "String": lambda: "x",
            "Int": lambda: self.rng.choice([0, 1, 2, 3]),
            "Float": lambda: 1.5,
            "Boolean": lambda: self.rng.random() < 0.5,
        }.get(inner.name, lambda: _NONE)()


_NONE = object()


class EnumValue(str):
    """An enum value: unquoted in a document, a string in variables."""


def variables_for(document: str, ids: Ids) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for definition in parse(document).definitions:
        if isinstance(definition, OperationDefinitionNode):
            for variable in definition.variable_definitions or ():
                type_ = SERVED._schema.get_type(get_named_type_name(variable.type))
                wrapped = _wrap(variable.type, type_)
                value = ids.value(variable.variable.name.value, wrapped)
                if value is not _NONE:
                    values[variable.variable.name.value] = _plain(value)
    return values


def get_named_type_name(node: Any) -> str:
    while not hasattr(node, "name"):
        node = node.type
    return str(node.name.value)


def _wrap(node: Any, named: Any) -> Any:
    kind = type(node).__name__
    if kind == "NonNullTypeNode":
        return GraphQLNonNull(_wrap(node.type, named))
    if kind == "ListTypeNode":
        return GraphQLList(_wrap(node.type, named))
    return named


def _plain(value: Any) -> Any:
    if isinstance(value, EnumValue):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def run_both(
    loop: Loop, dsn: str, admin: Actor, runs: list[tuple[str, str | None, dict[str, Any]]]
) -> list[tuple[str, str, str]]:
    """(stock, compiled, stock again) JSON for each (document, operation, variables), on one pool."""
    from threadline.db import Database

    async def work() -> list[tuple[str, str, str]]:
        db = await Database.connect(dsn, 1, 4)
        settings = settings_for(dsn, rate_limit_enabled=False)  # the same answer for every run

        async def once(schema: Any, document: str, operation: str | None, variables: dict[str, Any]) -> str:
            context = Context(
                db=db, settings=settings, authorization=f"Bearer {admin.api_key}", request_id="same-for-both"
            )
            result = await schema.execute(
                document, variable_values=variables, context_value=context, operation_name=operation
            )
            return as_json(result)

        try:
            out = []
            for document, operation, variables in runs:
                out.append(
                    (
                        await once(STOCK, document, operation, variables),
                        await once(COMPILED, document, operation, variables),
                        await once(STOCK, document, operation, variables),
                    )
                )
            return out
        finally:
            await db.close()

    return loop.run(work())


def compare(runs: list[tuple[str, str | None, dict[str, Any]]], results: list[tuple[str, str, str]]) -> int:
    """Asserts compiled == stock wherever the stock answer is stable; returns how many were compared."""
    compared = 0
    for (document, operation, variables), (stock, compiled, again) in zip(runs, results, strict=True):
        if stock != again:  # time, counters: the document reads something that moves between requests
            continue
        assert compiled == stock, (document, operation, variables)
        compared += 1
    return compared


@pytest.fixture
def ids(admin: Actor, make_user: Callable[..., Actor]) -> dict[str, list[str]]:
    return seeded(admin, make_user(admin))


def test_every_query_of_the_test_suite_gives_the_same_json_with_both_executors(
    loop: Loop, dsn: str, admin: Actor, ids: dict[str, list[str]], recorded: type[Recorder]
) -> None:
    schema = SERVED._schema
    picker = Ids(ids, 1)
    runs: list[tuple[str, str | None, dict[str, Any]]] = []
    for document in suite_documents():
        parsed = parse(document)
        if validate(schema, parsed):
            continue  # a test's deliberately invalid document, or a field of the schema as it was
        for definition in parsed.definitions:
            if isinstance(definition, OperationDefinitionNode):
                name = definition.name.value if definition.name else None
                runs.append((document, name, variables_for(document, picker)))
    assert len(runs) > 150
    results = run_both(loop, dsn, admin, runs)
    compared = compare(runs, results)
    assert compared > 0.8 * len(runs)
    assert sum('"errors": []' in stock for stock, _, _ in results) > 100  # data, not just refusals
    assert sum('"errors": []' not in stock for stock, _, _ in results) > 10  # and errors too
    assert ("Conversation", True) in recorded.compiled and ("Message", True) in recorded.compiled


@pytest.mark.parametrize("seed", range(2))
def test_fuzzed_documents_over_the_real_schema_give_the_same_json_with_both_executors(
    loop: Loop, dsn: str, admin: Actor, ids: dict[str, list[str]], seed: int, recorded: type[Recorder]
) -> None:
    schema = SERVED._schema
    picker = Ids(ids, seed)
    rng = random.Random(seed)
    fuzzer = Fuzzer(schema, rng, lambda name, arg: picker.literal(name, arg.type), max_depth=4)
    documents = valid_queries(schema, [fuzzer.document() for _ in range(150)])
    assert len(documents) > 60
    runs: list[tuple[str, str | None, dict[str, Any]]] = [(d, None, {}) for d in documents]
    results = run_both(loop, dsn, admin, runs)
    compared = compare(runs, results)
    assert compared > 0.8 * len(runs)
    assert sum('"errors": []' not in stock for stock, _, _ in results) > 5


INCREMENTAL = StrawberryConfig(enable_experimental_incremental_execution=True)
STOCK_INCREMENTAL = strawberry.Schema(
    EdgeQuery, types=[Leaf, Other], config=INCREMENTAL, execution_context_class=StockExecutionContext
)
COMPILED_INCREMENTAL = strawberry.Schema(
    EdgeQuery, types=[Leaf, Other], config=INCREMENTAL, execution_context_class=Recorder
)


async def incremental(schema: strawberry.Schema, document: str) -> list[str]:
    """The initial result and every subsequent payload, as their reprs."""
    result: Any = await schema.execute(document)
    payloads = [repr(getattr(result, "initial_result", result))]
    subsequent = getattr(result, "subsequent_results", None)
    if subsequent is not None:
        payloads += [repr(payload) async for payload in subsequent]
    return payloads


@pytest.mark.parametrize("seed", range(5))
def test_defer_and_stream_take_the_stock_path_with_the_same_payloads(seed: int) -> None:
    document = (
        f"{{ leaves(seed: {seed}) {{ id ... @defer {{ name child {{ id greeting }} }}"
        " kids @stream(initialCount: 1) { id mood } } }"
    )
    stock = asyncio.run(incremental(STOCK_INCREMENTAL, document))
    assert len(stock) > 1  # deferred and streamed payloads did follow
    assert asyncio.run(incremental(COMPILED_INCREMENTAL, document)) == stock


PAGE_DOCUMENTS = [
    """query Page { conversations(first: 5) { edges { cursor node { id title tags status messageCount
       owner { id email } participants { role user { id email } } } } pageInfo { hasNextPage endCursor } } }""",
    """query Fragments { conversations { nodes { ...C } } } fragment C on Conversation { id
       owner { ...U } participants { joinedAt user { ...U } } } fragment U on User { id displayName role }""",
    """query WithError { conversations { edges { node { owner { id } participants { user { id } } } } }
       conversation(id: "cnv_00000000000000000000000000000000") { id } }""",
    """query Skipped($s: Boolean!) { conversations { edges { node { id owner @skip(if: $s) { id }
       participants @include(if: $s) { role } } } } }""",
    """query Nested { conversations(first: 2) { edges { node { participants { user { id } }
       threads { nodes { id } } owner { email } } } } }""",
    """query Authors($c: ID!) { conversation(id: $c) { messages(first: 20) { edges { node { id
       author { id email } } } } threads { nodes { root { id author { displayName } } } } } }""",
]


def test_a_page_of_conversations_answers_owners_and_participants_through_twins_with_the_stock_json(
    loop: Loop, dsn: str, admin: Actor, ids: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threadline.auth.types
    import threadline.conversations.types

    answered: list[str] = []

    def counting(context: Any, name: str, key: Any) -> Any:
        value = ready.loaded(context, name, key)
        if value is not ready.NOT_READY:
            answered.append(name)
        return value

    monkeypatch.setattr(threadline.auth.types, "loaded", counting)
    monkeypatch.setattr(threadline.conversations.types, "loaded", counting)
    runs: list[tuple[str, str | None, dict[str, Any]]] = []
    for document in PAGE_DOCUMENTS:
        for variables in ({"s": True}, {"s": False}) if "$s" in document else ({},):
            runs.append(
                (document, None, {**variables, **({"c": ids["conversation"][0]} if "$c" in document else {})})
            )
    results = run_both(loop, dsn, admin, runs)
    assert compare(runs, results) == len(runs)
    assert sum('"errors": []' in stock for stock, _, _ in results) == len(runs) - 1
    assert '"owner": {"id": "usr_' in results[0][0] and '"participants": [{"role": "OWNER"' in results[0][0]
    assert results[-1][0].count('"author": {"id": "usr_') >= 5  # the seeded messages' authors
    # The stock executor never asks the twins; under compiled execution they answered the owners, the
    # participants and their users, from what the connection's resolver loaded.
    assert {"users", "participants"} <= set(answered)


def test_the_page_statement_returns_what_the_participant_and_user_loaders_fetch(
    loop: Loop, dsn: str, admin: Actor, ids: dict[str, list[str]], make_user: Callable[..., Actor]
) -> None:
    from threadline.auth.principal import Principal, Role
    from threadline.auth.repository import USER_COLUMNS, user_by_id, users_by_ids
    from threadline.conversations.repository import (
        PARTICIPANT_COLUMNS,
        PageRelations,
        list_conversations,
        participants_of,
    )
    from threadline.db import Database
    from threadline.ids import Kind, decode_id

    conversations = {decode_id(c, Kind.CONVERSATION) for c in ids["conversation"]}
    stranger = make_user(admin)  # a user of the tenant in no conversation: in no page's relations

    async def work() -> None:
        db = await Database.connect(dsn, 1, 2)
        try:
            tenant = decode_id(admin.tenant_id, Kind.TENANT)
            me = await user_by_id(db, tenant, decode_id(admin.user_id, Kind.USER))
            assert me is not None
            principal = Principal(tenant_id=tenant, user_id=me["id"], role=Role(me["role"]), team=me["team"])
            user_columns = [c.strip() for c in USER_COLUMNS.split(",")]
            for relations in (
                PageRelations(True, True, False),
                PageRelations(True, True, True),
                PageRelations(False, True, True),
                PageRelations(True, False, False),
            ):
                page = await list_conversations(
                    db, principal, status=None, tags=None, limit=500, after=None, relations=relations
                )
                rows = [r for r in page if r["id"] in conversations]
                assert len(rows) == len(conversations)
                if relations.members:
                    participants = [p for r in rows for p in r["page_participants"]]
                    expected = await participants_of(db, tenant, [r["id"] for r in rows])
                    columns = [c.strip() for c in PARTICIPANT_COLUMNS.split(",")]
                    assert sorted([[p[c] for c in columns] for p in participants]) == sorted(
                        [list(r.values()) for r in expected]
                    )
                    assert len(expected) >= 3
                    for row in rows:  # each conversation's own, in joining order
                        assert [p["conversation_id"] for p in row["page_participants"]] == [row["id"]] * len(
                            row["page_participants"]
                        )
                        in_order = sorted(row["page_participants"], key=lambda p: (p["joined_at"], p["id"]))
                        assert row["page_participants"] == in_order
                else:
                    assert "page_participants" not in page[0]
                # The page's users once, on its first row: the owners' and (if asked) the participants', as the
                # users loader reads them.
                wanted: set[Any] = set()
                if relations.owners:
                    wanted |= {r["owner_id"] for r in page if r["owner_id"] is not None}
                if relations.member_users:
                    for r in await participants_of(db, tenant, [r["id"] for r in page]):
                        wanted.add(r["user_id"])
                got = {u["id"]: [u[c] for c in user_columns] for u in page[0]["page_users"]}
                found = await users_by_ids(db, tenant, list(wanted))
                assert got == {r["id"]: list(r.values()) for r in found}
                assert len(got) >= 2 if relations.member_users else len(got) >= 1
                assert decode_id(stranger.user_id, Kind.USER) not in got
                assert all(r["page_users"] is None for r in page[1:])
            # Without users asked, no column for them.
            page = await list_conversations(
                db,
                principal,
                status=None,
                tags=None,
                limit=5,
                after=None,
                relations=PageRelations(False, True, False),
            )
            assert "page_users" not in page[0]
            # Another tenant's page finds nothing.
            other = Principal(tenant_id=uuid4(), user_id=me["id"], role=Role.ADMIN, team=None)
            relations = PageRelations(True, True, True)
            assert (
                await list_conversations(
                    db, other, status=None, tags=None, limit=50, after=None, relations=relations
                )
                == []
            )
        finally:
            await db.close()

    loop.run(work())


def test_an_executed_page_leaves_no_reference_cycle_behind(loop: Loop, dsn: str, admin: Actor) -> None:
    """Nothing of a request waits for the garbage collector: graphql-core's resolve info helpers (bound methods
    of the executor) and the bound compiled selections used to close a cycle through the executor, which kept
    the context, its loaders, rows and objects alive until a collection walked and freed them."""
    import gc

    from threadline.db import Database

    create_conversation(admin, "no cycle")
    document = PAGE_DOCUMENTS[0]

    async def work() -> list[str]:
        db = await Database.connect(dsn, 1, 2)
        settings = settings_for(dsn, rate_limit_enabled=False)
        try:
            for _ in range(2):  # the second run with everything warm (plans compiled, documents parsed)
                context = Context(db=db, settings=settings, authorization=f"Bearer {admin.api_key}")
                result = await COMPILED.execute(document, context_value=context)
                assert not result.errors and result.data is not None
                del context, result
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                context = Context(db=db, settings=settings, authorization=f"Bearer {admin.api_key}")
                result = await COMPILED.execute(document, context_value=context)
                assert not result.errors and '"owner"' in json.dumps(result.data)
                del context, result
                gc.collect()
                return sorted({type(o).__name__ for o in gc.garbage})
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        finally:
            await db.close()

    left = loop.run(work())
    assert not {"Recorder", "FastExecutionContext", "Context", "DataLoader", "Record"} & set(left), left
