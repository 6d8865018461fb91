"""Lists completed in one pass (graphql/compiled_trees.py) answer exactly what the stock executor answers.

An attacker's corpus: lists of objects whose selections reach nested plain, generic and twin-backed objects,
holding a bad value at every level (nulls where non-null is required, casts, subclasses, look-alikes,
exceptions, awaitables, raising attributes, generators, out-of-range leaves), twins that have no value for
some items or raise, documents with aliases, merged fields, fragments, `__typename`, `@skip`/`@include` with
variables at nested levels, selections deeper than a tree follows, mutations, queries of several root fields,
an abort signal, and queries that fail after a twin answered inside a tree (run again without twins). Each
document goes through both executors and their JSON is compared; the recorder checks that a tree actually
completed a list where the data allows it (so no comparison is vacuous), and that it handed the list back
where it must.
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import pytest
import strawberry
from graphql import execute, parse
from graphql.pyutils import AbortController

from threadline.graphql import compiled_trees
from threadline.graphql.fast_execution import FastExecutionContext, StockExecutionContext
from threadline.graphql.ready import NOT_READY, when_ready

T = TypeVar("T")


class TreeRecorder(FastExecutionContext):
    """Records each one-pass completion asked for a list: (object type, tree or leaf rows, completed)."""

    runs: list[tuple[str, str, bool]] = []

    def leaf_rows(self, object_type: Any, field_details_list: Any) -> Any:
        rows = super().leaf_rows(object_type, field_details_list)
        if rows is None:
            return None
        kind = "tree" if rows.__code__.co_filename.startswith("<tree rows") else "leaves"

        def recorded(items: Any, cls: Any, ex: Any = None) -> Any:
            out = rows(items, cls, ex)
            TreeRecorder.runs.append((object_type.name, kind, out is not None))
            return out

        return recorded


@pytest.fixture
def runs() -> Iterator[list[tuple[str, str, bool]]]:
    TreeRecorder.runs = []
    yield TreeRecorder.runs


def as_json(result: Any) -> str:
    return json.dumps({"data": result.data, "errors": [e.formatted for e in result.errors or []]})


def settled(schema: strawberry.Schema, document: str, variables: dict[str, Any] | None = None) -> str:
    """`schema.execute` in a loop of its own, closed once the work settled in the background is over."""

    async def run() -> Any:
        result = await schema.execute(document, variable_values=variables)
        while pending := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.wait(pending)
        return result

    return as_json(asyncio.run(run()))


# --- an attack schema ----------------------------------------------------------------------------------------


@strawberry.enum
class Kind(enum.Enum):
    CAT = "cat"
    DOG = "dog"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Pet(Named):
    """Implements an interface: strawberry's own is_type_of (casts, instances of the type)."""

    name: str
    kind: Kind
    born: datetime
    toys: list[str]


@strawberry.type
class Person:
    """No interface: no is_type_of at all (the stock executor takes any object that is not an error)."""

    id: strawberry.ID
    name: str
    nick: str | None
    age: int
    best: Pet | None
    strict: Pet
    pets: list[Pet]
    loose: list[Pet | None] | None
    boss: Person | None
    fault: strawberry.Private[int] = 0

    @strawberry.field
    @when_ready(lambda self, context: twin(self, "friend"))
    async def friend(self) -> Person | None:
        return await resolved(self, "friend")

    @strawberry.field
    @when_ready(lambda self, context: twin(self, "buddy"))
    async def buddy(self) -> Person:
        return await resolved(self, "buddy")

    @strawberry.field
    @when_ready(lambda self, context: twin(self, "friends"))
    async def friends(self) -> list[Person]:
        return await resolved(self, "friends")


@strawberry.type
class Box(Generic[T]):
    label: str
    item: T
    items: list[T]


@strawberry.type
class Group:
    members: list[Person]

    @strawberry.field
    async def explode(self) -> str | None:
        await asyncio.sleep(0)
        raise RuntimeError("the group exploded")


COUNTS = {"twins": 0, "resolved": 0, "reads": 0}


def twin(person: Person, name: str) -> Any:
    """The twin of a resolver: its value, none for fault 1, raises for fault 2 (the resolver then runs)."""
    if person.fault == 1:
        return NOT_READY
    if person.fault == 2:
        raise RuntimeError("the twin failed")
    COUNTS["twins"] += 1
    return getattr(person, f"_{name}", None)


async def resolved(person: Person, name: str) -> Any:
    COUNTS["resolved"] += 1
    await asyncio.sleep(0)
    return getattr(person, f"_{name}", None)


def pet(i: int, **changes: Any) -> Pet:
    values: dict[str, Any] = {
        "name": f"pet {i} ✓",
        "kind": Kind.CAT if i % 2 else Kind.DOG,
        "born": datetime(2026, 1, 1, 0, i % 60, i % 60, 1000 * (i % 7), tzinfo=UTC),
        "toys": ["ball", f"t{i}"],
    }
    values.update(changes)
    return Pet(**values)


def person(i: int, depth: int = 1, **changes: Any) -> Person:
    values: dict[str, Any] = {
        "id": strawberry.ID(f"p{i}"),
        "name": f"person {i}",
        "nick": None if i % 2 else f"n{i}",
        "age": 20 + i,
        "best": pet(i) if i % 3 else None,
        "strict": pet(100 + i),
        "pets": [pet(200 + i), pet(300 + i)],
        "loose": [pet(400 + i), None] if i % 2 else None,
        "boss": person(1000 + i, depth - 1) if depth > 0 else None,
    }
    extras = {k: changes.pop(k) for k in list(changes) if k.startswith("_")}
    values.update(changes)
    made = Person(**values)
    made._friend = person(2000 + i, 0) if depth > 0 else None  # type: ignore[attr-defined]
    made._buddy = person(3000 + i, 0) if depth > 0 else made  # type: ignore[attr-defined]
    made._friends = [person(4000 + i, 0), person(5000 + i, 0)] if depth > 0 else []  # type: ignore[attr-defined]
    for key, value in extras.items():
        setattr(made, key, value)
    return made


class Raising(Person):
    """A Person whose `name` raises when read."""

    @property  # type: ignore[misc]
    def name(self) -> str:  # type: ignore[override]
        COUNTS["reads"] += 1
        raise ValueError(f"name of {self.id} exploded")


def raising(i: int) -> Person:
    base = person(i, 0)
    made = object.__new__(Raising)
    made.__dict__.update({k: v for k, v in base.__dict__.items() if k != "name"})
    return made


class PetLike:
    """Every attribute of a Pet, not a Pet."""

    def __init__(self, source: Pet) -> None:
        self.__dict__.update(source.__dict__)


class SubPet(Pet):
    pass


class Soon:
    """Awaitable, not a coroutine."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        async def later() -> Any:
            await asyncio.sleep(0)
            return self.value

        return later().__await__()


def pets_of(make: Any) -> list[Person]:
    return [person(k, 1, **make(k)) for k in range(4)]


# Each case: the people a list holds; the first person of each is plain, a later one carries the bad value.
CASES: dict[str, Any] = {
    "plain": lambda: [person(k) for k in range(5)],
    "tuple of people": lambda: tuple(person(k) for k in range(3)),
    "null best (nullable)": lambda: [person(0, best=None), person(1)],
    "null strict (non-null)": lambda: [person(0), person(1, strict=None), person(2)],
    "null strict two levels down": lambda: [person(0), person(1, boss=person(7, strict=None))],
    "null in non-null pets": lambda: [person(0), person(1, pets=[pet(1), None])],
    "null pets list (non-null)": lambda: [person(0), person(1, pets=None)],
    "null in loose (nullable items)": lambda: [person(0, loose=[None, None, pet(3)]), person(1)],
    "null loose": lambda: [person(0, loose=None)],
    "pets as tuple": lambda: [person(0, pets=(pet(1), pet(2)))],
    "pets as generator": lambda: [person(0), person(1, pets=(pet(i) for i in range(2)))],
    "pets as an empty set": lambda: [person(0), person(1, pets=frozenset())],
    "pets as dict values": lambda: [person(0), person(1, pets={"a": pet(1), "b": pet(2)}.values())],
    "cast best to its own type": lambda: [person(0), person(1, best=strawberry.cast(Pet, pet(1)))],
    "cast best to another type": lambda: [person(0), person(1, best=strawberry.cast(Person, pet(1)))],
    "cast boss to its own type": lambda: [person(0), person(1, boss=strawberry.cast(Person, person(8, 0)))],
    "subclass of Pet": lambda: [person(0), person(1, best=SubPet(**pet(1).__dict__))],
    "look-alike of Pet": lambda: [person(0), person(1, best=PetLike(pet(1)))],
    "look-alike of Person as boss": lambda: [person(0), person(1, boss=PetLike(pet(2)))],  # type: ignore[arg-type]
    "Pet as boss (no is_type_of)": lambda: [person(0), person(1, boss=pet(3))],
    "exception as best": lambda: [person(0), person(1, best=ValueError("returned, not raised"))],
    "exception as boss": lambda: [person(0), person(1, boss=ValueError("returned, not raised"))],
    "awaitable best": lambda: [person(0), person(1, best=Soon(pet(5)))],
    "awaitable boss": lambda: [person(0), person(1, boss=Soon(person(9, 0)))],
    "awaitable leaf at depth": lambda: [person(0), person(1, best=pet(1, name=Soon("late")))],
    "raising attribute at depth": lambda: [person(0), person(1, boss=raising(3))],
    "int out of range at depth": lambda: [person(0), person(1, boss=person(5, 0, age=2**40))],
    "string where an int is": lambda: [person(0, boss=person(5, 0, age="5"))],
    "bool where an int is": lambda: [person(0, boss=person(5, 0, age=True))],
    "bad enum at depth": lambda: [person(0), person(1, best=pet(1, kind="cat"))],
    "naive datetime at depth": lambda: [person(0), person(1, best=pet(1, born=datetime(2026, 1, 1)))],
    "null in toys at depth": lambda: [person(0), person(1, best=pet(1, toys=["a", None]))],
    "Undefined best": lambda: [person(0), person(1, best=__import__("graphql").pyutils.Undefined)],
    "twin not ready for one": lambda: [person(0), person(1, fault=1), person(2)],
    "twin raises for one": lambda: [person(0), person(1, fault=2), person(2)],
    "twin not ready for the first": lambda: [person(0, fault=1), person(1), person(2)],
    "twin gives null to a non-null field": lambda: [person(0), person(1, _buddy=None)],
    "twin gives a Pet for a Person": lambda: [person(0), person(1, _friend=pet(1))],
    "twin gives a cast Person": lambda: [person(0), person(1, _friend=strawberry.cast(Person, person(6, 0)))],
    "twin gives a tuple of friends": lambda: [person(0, _friends=(person(6, 0), person(7, 0)))],
    "twin gives a generator of friends": lambda: [person(0), person(1, _friends=(p for p in [person(6, 0)]))],
    "twin gives null in friends": lambda: [person(0), person(1, _friends=[person(6, 0), None])],
    "twin gives an exception": lambda: [person(0), person(1, _friend=RuntimeError("a value"))],
    "twin gives an awaitable": lambda: [person(0), person(1, _friend=Soon(person(6, 0)))],
    "twin's person has a null strict": lambda: [person(0), person(1, _friend=person(6, 0, strict=None))],
    "null item in the list": lambda: [person(0), None, person(2)],
    "exception item": lambda: [person(0), ValueError("an item")],
    "awaitable item": lambda: [person(0), Soon(person(1))],
    "cast item": lambda: [person(0), strawberry.cast(Person, person(1))],
    "pet item (no is_type_of)": lambda: [person(0), pet(1)],
}


def box(i: int, item: Any, items: Any = None) -> Box[Any]:
    return Box(label=f"box {i}", item=item, items=[item] if items is None else items)


BOXES: dict[str, Any] = {
    "plain": lambda: [box(k, person(k)) for k in range(3)],
    "a box of a pet in a box of people": lambda: [box(0, person(0)), box(1, pet(1))],
    "a specialized instance": lambda: [box(0, person(0)), Box[Person](label="s", item=person(1), items=[])],
    "a cast box": lambda: [box(0, person(0)), strawberry.cast(Box, box(1, person(1)))],
    "a box holding a box": lambda: [box(0, person(0)), box(1, box(2, person(2)))],
    "a subclass of Box": lambda: [
        box(0, person(0)),
        type("SubBox", (Box,), {})(label="x", item=person(1), items=[]),
    ],
    "null item": lambda: [box(0, person(0)), box(1, None)],
    "null in items": lambda: [box(0, person(0), [person(1), None])],
}


@strawberry.type
class AttackQuery:
    @strawberry.field
    def people(self, case: str = "plain") -> list[Person]:
        return CASES[case]()  # type: ignore[no-any-return]

    @strawberry.field
    def maybe_people(self, case: str = "plain") -> list[Person | None] | None:
        return CASES[case]()  # type: ignore[no-any-return]

    @strawberry.field
    async def later_people(self, case: str = "plain") -> list[Person]:
        await asyncio.sleep(0)
        return CASES[case]()  # type: ignore[no-any-return]

    @strawberry.field
    def boxes(self, case: str = "plain") -> list[Box[Person]] | None:
        return BOXES[case]()  # type: ignore[no-any-return]

    @strawberry.field
    def group(self, case: str = "plain") -> Group | None:
        return Group(members=CASES[case]())

    @strawberry.field
    async def fails(self) -> str | None:
        await asyncio.sleep(0)
        raise RuntimeError("a sibling root field failed")

    @strawberry.field
    def grid(self) -> list[list[Person | None]]:
        return [[person(0), None], [person(1, strict=None)], []]


@strawberry.type
class AttackMutation:
    @strawberry.mutation
    def touch(self, case: str = "plain") -> list[Person]:
        COUNTS["resolved"] += 1
        return CASES[case]()  # type: ignore[no-any-return]


STOCK = strawberry.Schema(
    AttackQuery, AttackMutation, types=[Pet], execution_context_class=StockExecutionContext
)
FAST = strawberry.Schema(AttackQuery, AttackMutation, types=[Pet], execution_context_class=TreeRecorder)

PET = "name kind born toys __typename"
PERSON = f"id name nick age best {{ {PET} }} strict {{ name }} pets {{ {PET} }} loose {{ name kind }}"
FULL = (
    f"{PERSON} boss {{ {PERSON} boss {{ id strict {{ name }} }} }}"
    f" friend {{ id name strict {{ name }} }} buddy {{ id boss {{ id }} }} friends {{ id pets {{ name }} }}"
)


def compare(document: str, variables: dict[str, Any] | None = None) -> str:
    stock = settled(STOCK, document, variables)
    fast = settled(FAST, document, variables)
    assert fast == stock, document
    return stock


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_value_gives_the_stock_answer(case: str, runs: list[tuple[str, str, bool]]) -> None:
    compare(f"query($c: String!) {{ people(case: $c) {{ {FULL} }} }}", {"c": case})
    # Nullable list and items: the bad values null less of the response.
    compare(f"query($c: String!) {{ maybePeople(case: $c) {{ {FULL} }} }}", {"c": case})
    # An async resolver's list, and a plain list one level down.
    compare(f"query($c: String!) {{ laterPeople(case: $c) {{ {FULL} }} }}", {"c": case})
    compare(f"query($c: String!) {{ group(case: $c) {{ members {{ {FULL} }} }} }}", {"c": case})
    trees = [r for r in runs if r[1] == "tree" and r[0] == "Person"]
    assert trees, runs  # the list was offered to a tree each time
    if case in (
        "plain",
        "tuple of people",
        "null best (nullable)",
        "null in loose (nullable items)",
        "null loose",
    ):
        assert all(done for _, _, done in trees), runs
    if case in ("pets as tuple", "twin gives a tuple of friends"):
        assert any(done for _, _, done in trees), runs


def test_the_plain_page_is_completed_by_one_tree_per_list(runs: list[tuple[str, str, bool]]) -> None:
    compare(f"{{ people {{ {FULL} }} }}")
    assert runs == [("Person", "tree", True)]


@pytest.mark.parametrize(
    "case",
    [
        "null strict (non-null)",
        "twin not ready for one",
        "twin raises for one",
        "cast best to its own type",
        "Pet as boss (no is_type_of)",
        "awaitable boss",
        "raising attribute at depth",
        "twin gives null to a non-null field",
    ],
)
def test_a_value_not_taken_plainly_hands_the_list_back(case: str, runs: list[tuple[str, str, bool]]) -> None:
    compare(f"query($c: String!) {{ people(case: $c) {{ {FULL} }} }}", {"c": case})
    assert ("Person", "tree", False) in runs, runs


DOCUMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "aliases at every level": (
        "{ people { a: id b: name best { x: name y: kind z: __typename } c: boss { d: id e: best { n: name } }"
        " f: friend { g: id h: friends { i: id } } } }",
        {},
    ),
    "one field under two aliases": (
        "{ people { best { name } other: best { kind } boss { a: best { name } b: best { toys } } } }",
        {},
    ),
    "merged fields with different sub-selections": (
        "{ people { best { name } best { kind } ... on Person { best { toys name } } boss { id } boss { name } }"
        " }",
        {},
    ),
    "__typename everywhere, aliased": (
        "{ people { __typename t: __typename best { __typename } boss { __typename boss { __typename } }"
        " friends { __typename } } }",
        {},
    ),
    "named fragments at depth": (
        "query { people { ...P boss { ...P } } } fragment P on Person { id best { ...N } friend { ...Q } }"
        " fragment N on Named { name } fragment Q on Person { id name }",
        {},
    ),
    "inline fragments on the interface at depth": (
        "{ people { best { ... on Named { name } ... on Pet { kind } } pets { ... on Named { name } } } }",
        {},
    ),
    "skip and include with variables at depth (true)": (
        "query($a: Boolean!, $b: Boolean!) { people { id best @include(if: $a) { name kind @skip(if: $a) }"
        " boss { id @skip(if: $b) name @include(if: $b) best @skip(if: $a) { name } }"
        " friend @include(if: $b) { id } ... @include(if: $a) { nick } } }",
        {"a": True, "b": False},
    ),
    "skip and include with variables at depth (false)": (
        "query($a: Boolean!, $b: Boolean!) { people { id best @include(if: $a) { name kind @skip(if: $a) }"
        " boss { id @skip(if: $b) name @include(if: $b) best @skip(if: $a) { name } }"
        " friend @include(if: $b) { id } ... @include(if: $a) { nick } } }",
        {"a": False, "b": True},
    ),
    "everything below skipped": (
        "query($s: Boolean!) { people { best @skip(if: $s) { name } boss { id } } }",
        {"s": True},
    ),
    "generic boxes": ("{ boxes { label __typename item { id best { name } } items { id name } } }", {}),
    "list of lists": ("{ grid { id strict { name } best { name } } }", {}),
    "several root fields (no twins)": (
        "{ people { id friend { id } friends { id } } again: people { id buddy { id } } }",
        {},
    ),
    "a sibling root field fails": ("{ people { id best { name } } fails }", {}),
    "a tree with twins then a failing field (run again)": (
        "{ group { members { id friend { id name } friends { id best { name } } } explode } }",
        {},
    ),
    "twins, then a failing field, one person without a twin value": (
        '{ group(case: "twin not ready for one") { members { id friend { id } } explode } }',
        {},
    ),
    "include on fragment spreads at depth": (
        "query($a: Boolean!) { people { id boss { ...B @include(if: $a) ... on Person @skip(if: $a) { nick } } } }"
        " fragment B on Person { name best { ... on Pet @include(if: $a) { kind } name } }",
        {"a": True},
    ),
    "include on fragment spreads at depth (false)": (
        "query($a: Boolean!) { people { id boss { ...B @include(if: $a) ... on Person @skip(if: $a) { nick } } } }"
        " fragment B on Person { name best { ... on Pet @include(if: $a) { kind } name } }",
        {"a": False},
    ),
    "introspection at depth": ("{ people { id best { name __schema: __typename } } }", {}),
}


@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_documents_give_the_stock_answer(name: str, runs: list[tuple[str, str, bool]]) -> None:
    document, variables = DOCUMENTS[name]
    compare(document, variables)


@pytest.mark.parametrize("case", list(BOXES))
def test_generic_types_give_the_stock_answer(case: str, runs: list[tuple[str, str, bool]]) -> None:
    compare(
        "query($c: String!) { boxes(case: $c) { label __typename item { id best { name } } items { id } } }",
        {"c": case},
    )
    assert any(r[0] == "PersonBox" and r[1] == "tree" for r in runs), runs
    if case == "plain":
        assert runs == [("PersonBox", "tree", True)]
    # Leaves only: one loop over the generic class's instances (compiled_leaves.leaf_rows).
    runs.clear()
    compare("query($c: String!) { boxes(case: $c) { label __typename } }", {"c": case})
    assert runs and runs[0][:2] == ("PersonBox", "leaves"), runs


def test_twins_answer_inside_a_tree_and_a_failing_query_is_run_again_without_them(
    runs: list[tuple[str, str, bool]],
) -> None:
    COUNTS.update(twins=0, resolved=0)
    compare("{ people { id friend { id } friends { id } buddy { id } } }")
    assert ("Person", "tree", True) in runs
    assert COUNTS["twins"] > 0
    # The twin answered in the tree, then `explode` failed: the second run's resolvers give the stock answer.
    runs.clear()
    stock = settled(STOCK, "{ group { members { id friend { id } } explode } }")
    COUNTS.update(twins=0, resolved=0)
    fast = settled(FAST, "{ group { members { id friend { id } } explode } }")
    assert fast == stock
    assert "the group exploded" in stock
    assert ("Person", "tree", True) in runs and ("Person", "tree", False) in runs
    assert COUNTS["twins"] > 0 and COUNTS["resolved"] > 0


def test_mutations_complete_plain_trees_but_never_ask_twins(runs: list[tuple[str, str, bool]]) -> None:
    COUNTS.update(twins=0, resolved=0)
    stock = settled(STOCK, f"mutation {{ touch {{ {FULL} }} }}")
    stock_resolved = COUNTS["resolved"]
    COUNTS.update(twins=0, resolved=0)
    assert settled(FAST, f"mutation {{ touch {{ {FULL} }} }}") == stock
    assert COUNTS["twins"] == 0 and COUNTS["resolved"] == stock_resolved
    runs.clear()
    settled(FAST, "mutation { touch { id best { name } boss { id strict { name } } } }")
    assert runs == [("Person", "tree", True)]


def test_selections_deeper_than_a_tree_follows_give_the_stock_answer(
    runs: list[tuple[str, str, bool]],
) -> None:
    def nest(levels: int) -> str:
        body = "id"
        for _ in range(levels):
            body = f"id boss {{ {body} }}"
        return body

    deep = {k: person(k, 12) for k in range(2)}
    CASES["deep"] = lambda: list(deep.values())
    try:
        for levels in (compiled_trees.TREE_DEPTH_MAX - 1, compiled_trees.TREE_DEPTH_MAX, 9):
            runs.clear()
            compare(f'{{ people(case: "deep") {{ {nest(levels)} }} }}')
            trees = [r for r in runs if r[1] == "tree"]
            if levels <= compiled_trees.TREE_DEPTH_MAX:
                assert trees == [("Person", "tree", True)], (levels, runs)
            else:
                assert trees == [], (levels, runs)
    finally:
        del CASES["deep"]


def test_with_an_abort_signal_trees_with_twins_hand_the_list_back(runs: list[tuple[str, str, bool]]) -> None:
    async def run(schema: strawberry.Schema, document: str) -> str:
        controller = AbortController()
        result = execute(
            schema._schema,
            parse(document),
            executor_class=schema.execution_context_class,
            abort_signal=controller.signal,
        )
        if asyncio.iscoroutine(result) or hasattr(result, "__await__"):
            result = await result  # type: ignore[misc]
        return as_json(result)

    for document in (
        f"{{ people {{ {FULL} }} }}",
        "{ people { id best { name } boss { id } } }",
        '{ people(case: "twin not ready for one") { id friend { id } } }',
    ):
        runs.clear()
        stock = asyncio.run(run(STOCK, document))
        assert asyncio.run(run(FAST, document)) == stock
        if "friend" in document:  # the twins' tree hands the list back (nested plain trees may complete)
            assert runs[0] == ("Person", "tree", False), runs
        else:
            assert ("Person", "tree", True) in runs


def test_a_raising_attribute_is_read_again_only_by_the_per_object_completion() -> None:
    COUNTS["reads"] = 0
    settled(STOCK, '{ people(case: "raising attribute at depth") { id boss { id name } } }')
    stock_reads = COUNTS["reads"]
    COUNTS["reads"] = 0
    settled(FAST, '{ people(case: "raising attribute at depth") { id boss { id name } } }')
    # The tree's read, then the compiled read and the stock execute_field's (as before trees).
    assert stock_reads == 1 and COUNTS["reads"] <= 3


# --- the real schema: a page of conversations whose owners and participants' users are not all found -----------

PAGE = """query Page($after: String, $pinned: Boolean!) { conversations(first: 2, after: $after, pinnedFirst: $pinned) {
  edges { cursor node { id title owner { id email role } participants { role joinedAt user { id email } } } }
  pageInfo { hasNextPage endCursor } } }"""
PAGE_NODES = """query Nodes { conversations(first: 50) { nodes { __typename id owner { id displayName }
  participants { user { id } } } } }"""
PAGE_OWNERS = "query Owners { conversations(first: 50) { edges { node { id owner { id email } } } } }"


def test_a_page_whose_users_are_missing_or_of_another_tenant_gives_the_stock_json(
    loop: Any, dsn: str, admin: Any, make_user: Any, make_tenant: Any, runs: list[tuple[str, str, bool]]
) -> None:
    """Owners and participants' users the users loader would not find (of another tenant: the tenant's
    statements never see them; an owner of none) are null in both answers, and nothing of the other tenant
    shows; pinned-first pages and their cursors are the stock ones, page after page."""
    import asyncpg

    from tests.api import create_conversation, join
    from tests.harness import test_settings
    from threadline.db import Database
    from threadline.graphql.context import Context
    from threadline.ids import Kind as IdKind
    from threadline.ids import decode_id
    from threadline.schema import build_schema

    member = make_user(admin)
    stranger = make_tenant()  # another tenant's admin
    made = [create_conversation(admin, f"page {k}") for k in range(5)]
    join(admin, member, made[0], "VIEWER")
    join(admin, member, made[3])
    admin.client.ok("mutation($c: ID!) { conversationPin(conversationId: $c) { id } }", {"c": made[1]})
    admin.client.ok("mutation($c: ID!) { conversationPin(conversationId: $c) { id } }", {"c": made[4]})
    tenant = decode_id(admin.tenant_id, IdKind.TENANT)
    foreign = decode_id(stranger.user_id, IdKind.USER)
    conversation = [decode_id(c, IdKind.CONVERSATION) for c in made]

    async def corrupt() -> None:
        db = await asyncpg.connect(dsn)
        try:
            # The schema allows what the product never writes: an owner and a participant of another tenant.
            await db.execute("UPDATE conversation SET owner_id = $1 WHERE id = $2", foreign, conversation[0])
            await db.execute("UPDATE conversation SET owner_id = NULL WHERE id = $1", conversation[2])
            for target in (conversation[1], conversation[3]):
                await db.execute(
                    "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role, joined_at)"
                    " VALUES (gen_random_uuid(), $1, $2, $3, 'VIEWER', now())",
                    tenant,
                    target,
                    foreign,
                )
        finally:
            await db.close()

    loop.run(corrupt())
    stock_schema = build_schema(fast_execution=False)
    fast_schema = build_schema()
    fast_schema.execution_context_class = TreeRecorder

    async def once(db: Any, schema: Any, document: str, variables: dict[str, Any]) -> str:
        context = Context(
            db=db,
            settings=test_settings(dsn, rate_limit_enabled=False),
            authorization=f"Bearer {admin.api_key}",
            request_id="same-for-both",
        )
        return as_json(await schema.execute(document, variable_values=variables, context_value=context))

    async def work() -> list[tuple[str, str]]:
        db = await Database.connect(dsn, 1, 2)
        out = []
        try:
            for document in (PAGE_NODES, PAGE_OWNERS):
                out.append(
                    (await once(db, stock_schema, document, {}), await once(db, fast_schema, document, {}))
                )
            for pinned in (True, False):
                after = None
                while True:  # page by page, with the stock answer's cursor
                    variables = {"after": after, "pinned": pinned}
                    stock = await once(db, stock_schema, PAGE, variables)
                    out.append((stock, await once(db, fast_schema, PAGE, variables)))
                    info = json.loads(stock)["data"]["conversations"]["pageInfo"]
                    if not info["hasNextPage"]:
                        break
                    after = info["endCursor"]
        finally:
            await db.close()
        return out

    answers = loop.run(work())
    for stock, fast in answers:
        assert fast == stock
        assert '"errors": []' in stock, stock
        assert stranger.user_id not in stock and "usr_" in stock
    everything = answers[0][0]
    nodes = json.loads(everything)["data"]["conversations"]["nodes"]
    by_id = {n["id"]: n for n in nodes}
    assert by_id[made[0]]["owner"] is None and by_id[made[2]]["owner"] is None
    assert by_id[made[1]]["owner"] == {
        "id": admin.user_id,
        "displayName": by_id[made[1]]["owner"]["displayName"],
    }
    assert {"user": None} in by_id[made[1]]["participants"] and {"user": None} in by_id[made[3]][
        "participants"
    ]
    assert {"user": {"id": member.user_id}} in by_id[made[3]]["participants"]
    # Pinned first: the two pins lead the first page, in pin order; every conversation once over the pages.
    pinned_pages = [json.loads(s)["data"]["conversations"]["edges"] for s, _ in answers[2:5]]
    ids = [e["node"]["id"] for page in pinned_pages for e in page]
    assert ids[:2] == [made[1], made[4]] and sorted(ids) == sorted(made)
    # Not vacuous: the edges were completed by trees, with the twins' values (no tree handed its list back).
    assert ("ConversationEdge", "tree", True) in runs
    assert ("Conversation", "tree", True) in runs


def test_the_page_statement_looks_its_users_up_by_id_in_a_tenant_of_many_users(loop: Any, dsn: str) -> None:
    """`page_users` finds the page's owners and participants' users through app_user's primary key: not by
    reading every user of the tenant (a hash join over a scan of app_user, whatever the tenant's size)."""
    import asyncpg

    from threadline.auth.principal import Principal, Role
    from threadline.conversations.repository import PageRelations, list_conversations

    class Capture:
        async def fetch(self, sql: str, *params: Any) -> list[Any]:
            self.sql, self.params = sql, params
            return []

    async def work() -> list[str]:
        db = await asyncpg.connect(dsn, statement_cache_size=0)
        try:
            tenant = await db.fetchval(
                "INSERT INTO tenant (id, name) VALUES (gen_random_uuid(), 'many') RETURNING id"
            )
            await db.execute(
                "INSERT INTO app_user (tenant_id, email, role) SELECT $1, 'u' || g || '@example.com',"
                " CASE WHEN g = 1 THEN 'ADMIN' ELSE 'MEMBER' END FROM generate_series(1, 20000) g",
                tenant,
            )
            await db.execute(
                "INSERT INTO conversation (id, tenant_id, owner_id, title, last_activity_at)"
                " SELECT gen_random_uuid(), $1, u.id, 'c' || u.n, now() - u.n * interval '1 second' FROM"
                " (SELECT id, row_number() OVER (ORDER BY id) AS n FROM app_user WHERE tenant_id = $1) u"
                " WHERE u.n <= 120",
                tenant,
            )
            await db.execute(
                "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)"
                " SELECT gen_random_uuid(), $1, c.id, c.owner_id, 'OWNER' FROM conversation c WHERE c.tenant_id = $1",
                tenant,
            )
            await db.execute("ANALYZE app_user; ANALYZE conversation; ANALYZE participant")
            admin = await db.fetchval(
                "SELECT id FROM app_user WHERE tenant_id = $1 AND role = 'ADMIN'", tenant
            )
            plans = []
            for pinned in (False, True):
                capture = Capture()
                principal = Principal(tenant_id=tenant, user_id=admin, role=Role.ADMIN, team=None)
                await list_conversations(
                    capture,  # type: ignore[arg-type]
                    principal,
                    status=None,
                    tags=None,
                    limit=51,
                    after=None,
                    pinned_first=pinned,
                    relations=PageRelations(True, True, True),
                )
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await db.execute(f"SET plan_cache_mode = {mode}")
                    statement = await db.prepare(f"EXPLAIN {capture.sql}")
                    plans.append("\n".join(r[0] for r in await statement.fetch(*capture.params)))
                    rows = await db.fetch(capture.sql, *capture.params)
                    assert len(rows) == 51 and len(rows[0]["page_users"]) == 51
            return plans
        finally:
            await db.close()

    for plan in loop.run(work()):
        users = plan[plan.index("InitPlan") :]
        assert "Seq Scan on app_user" not in users and "app_user_pkey" in users, plan
