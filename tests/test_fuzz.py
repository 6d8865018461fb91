"""Fuzzing the served schema (schema.graphql) with hypothesis-graphql, over HTTP, on a fixed budget.

Generated queries and mutations go to the real test server as an ADMIN, as a MEMBER and without
credentials, and schema-violating documents (hypothesis-graphql's NEGATIVE mode) as the admin. Whatever a document asks, the answer must be JSON with a status below 500 (a 429 is
fine), and no error may be INTERNAL or lack a code. Ids are mostly seeded ids of the kind the argument
takes, else ids of another kind, unknown ids, malformed strings or integers; `after` is a real
cursor, null or junk; half of the documents pass their arguments as variables (another coercion path)
instead of literals.

Generation is derandomized and the example database is off, so every run sends the same documents
(only the seeded ids differ). Each test prints `fuzz <caller> <kind>: N cases, 0 INTERNAL, 0 5xx`
(see it with -s) and asserts that it sent its whole budget.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import graphql
import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, nodes, queries
from hypothesis_graphql._strategies.negative_sites import enumerate_violation_sites

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import RUN_CREATE, settle
from threadline.ids import Kind, decode_id, encode_id

SCHEMA = graphql.build_schema((Path(__file__).resolve().parent.parent / "schema.graphql").read_text())

# Cases per test: (caller, kind) -> max_examples. Together they run in about half a minute.
BUDGET = {
    ("admin", "queries"): 300,
    ("admin", "mutations"): 300,
    ("member", "queries"): 200,
    ("member", "mutations"): 200,
    ("admin", "invalid"): 150,
    ("anonymous", "any"): 80,
}
# For longer local runs: THREADLINE_FUZZ_SCALE=10 multiplies the budgets; THREADLINE_FUZZ_SEED=N tries
# other documents than the fixed ones.
SCALE = float(os.environ.get("THREADLINE_FUZZ_SCALE", "1"))
SEED = os.environ.get("THREADLINE_FUZZ_SEED")
CASES: Counter[str] = Counter()  # cases actually sent, per test: proves a test did not fuzz nothing

FUZZ_SETTINGS = {
    "derandomize": SEED is None,
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


# --- value strategies for the custom scalars (and ID) ---------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
NAME = st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,12}", fullmatch=True)


def to_node(value: Any) -> graphql.ValueNode:
    """A GraphQL literal for a JSON value (object keys must be GraphQL names)."""
    if value is None:
        return graphql.NullValueNode()
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, float):
        return nodes.Float(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([to_node(v) for v in value])
    return nodes.Object(
        [graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=to_node(v)) for k, v in value.items()]
    )


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAME, inner, max_size=4),
    max_leaves=12,
)
WHEN = st.sampled_from(
    [
        "2024-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-12:00",
        "2024-02-30",
        "",
        "yesterday",
    ]
)
LOOSE = JSON_VALUES | WHEN | st.integers(min_value=-(2**40), max_value=2**40)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "human", "USER", "robot", ""]) | LOOSE
KEYS = st.sampled_from(["a", "b", "c", "n1", "n2", "00000000-0000-4000-8000-000000000000"])


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | LOOSE


THREADLINE_DOC = st.fixed_dictionaries(
    {
        "conversation_id": _maybe(st.sampled_from(["ext-1", "ext-2"])),
        "metadata": _maybe(
            st.fixed_dictionaries({"export_version": _maybe(st.sampled_from(["1.0", "1.9", "2.0"]))})
        ),
        "conversation": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "title": _maybe(TEXT),
                    "tags": _maybe(st.lists(_maybe(TEXT), max_size=3)),
                    "status": _maybe(st.sampled_from(["active", "archived", "deleted", "gone"])),
                    "max_history_messages": _maybe(st.integers()),
                    "created_at": WHEN | LOOSE,
                    "last_activity_at": WHEN | LOOSE,
                    "model": _maybe(TEXT),
                },
            )
        ),
        "messages": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"id": _maybe(KEYS), "role": ROLES, "content": _maybe(TEXT)},
                    optional={
                        "parent_id": _maybe(KEYS),
                        "timestamp": WHEN | LOOSE,
                        "tokens": _maybe(st.fixed_dictionaries({"prompt": LOOSE, "completion": LOOSE})),
                        "attachments": _maybe(st.lists(JSON_VALUES, max_size=2)),
                        "author_id": _maybe(st.none()),
                        "deleted_at": WHEN | LOOSE,
                    },
                ),
                max_size=4,
            )
        ),
    }
)
CHATGPT_DOC = st.fixed_dictionaries(
    {"id": _maybe(st.sampled_from(["g-1", "g-2"]))},
    optional={
        "title": _maybe(TEXT),
        "create_time": LOOSE,
        "is_archived": LOOSE,
        "mapping": _maybe(
            st.dictionaries(
                KEYS.filter(lambda k: k[0].isalpha()),
                _maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "parent": _maybe(KEYS),
                            "children": _maybe(st.lists(_maybe(KEYS), max_size=3)),
                            "message": _maybe(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "author": _maybe(st.fixed_dictionaries({"role": ROLES})),
                                        "content": _maybe(
                                            st.fixed_dictionaries(
                                                {"parts": _maybe(st.lists(LOOSE, max_size=3))}
                                            )
                                        ),
                                        "create_time": LOOSE,
                                    },
                                )
                            ),
                        },
                    )
                ),
                max_size=4,
            )
        ),
    },
)
CLAUDE_DOC = st.fixed_dictionaries(
    {"uuid": _maybe(st.sampled_from(["c-1", "c-2"]))},
    optional={
        "name": _maybe(TEXT),
        "created_at": WHEN | LOOSE,
        "chat_messages": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"uuid": _maybe(KEYS), "sender": ROLES, "text": _maybe(TEXT)},
                    optional={"parent_message_uuid": _maybe(KEYS), "created_at": WHEN | LOOSE},
                ),
                max_size=4,
            )
        ),
    },
)
JSON_NODES = (
    JSON_VALUES
    | THREADLINE_DOC
    | st.fixed_dictionaries({"conversations": st.lists(THREADLINE_DOC, max_size=2)})
    | CHATGPT_DOC
    | st.lists(CHATGPT_DOC, max_size=2)
    | CLAUDE_DOC
).map(to_node)

ZONES = st.sampled_from(
    [
        None,
        UTC,
        timezone(timedelta(hours=14)),
        timezone(-timedelta(hours=12)),
        timezone(timedelta(minutes=-90)),
    ]
)
ODD_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "9999-12-31T23:59:59.999999Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01",
        "2024-01-01T00:00:00",
        "+275760-09-13T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00",
        "now",
        "",
        "2024-01-01T00:00:00+99:00",
    ]
)
DATETIME_NODES = (
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES).map(
        lambda d: nodes.String(d.isoformat())
    )
    | ODD_TIMES.map(nodes.String)
    | TEXT.map(nodes.String)
    | st.integers().map(nodes.Int)
)
DATE_NODES = (
    st.dates(min_value=date(1, 1, 1)).map(lambda d: nodes.String(d.isoformat()))
    | st.sampled_from(["2024-02-30", "0000-01-01", "2024-1-1", "", "today"]).map(nodes.String)
    | TEXT.map(nodes.String)
)

MALFORMED_IDS = [
    "",
    "nonsense",
    "cnv_",
    "cnv_" + "g" * 32,
    "CNV_" + "0" * 32,
    "cnv-" + "0" * 32,
    "cnv_" + "0" * 31,
    "cnv_" + "0" * 33,
    "xyz_" + "0" * 32,
    "x" * 10_000,
    "cnv_\x00" + "0" * 31,
    "cnv_{00000000-0000-0000-0000-000000000000}",
    " cnv_" + "0" * 31,
]


REAL = "\x01real:"  # placeholder for "a real id of the kind this argument takes", see `with_real_ids`


def id_nodes(real: list[str]) -> st.SearchStrategy[graphql.ValueNode]:
    """IDs: real ones of the right kind (often), real ones of any kind, the same UUID under another kind,
    unknown ids of each kind, malformed strings and integers."""
    real_ids = st.sampled_from(real)
    right_kind = st.integers(min_value=0, max_value=1000).map(lambda n: f"{REAL}{n}")
    other_kind = st.tuples(real_ids, st.sampled_from(list(Kind))).map(lambda p: f"{p[1].value}_{p[0][4:]}")
    unknown = st.builds(encode_id, st.sampled_from(list(Kind)), st.uuids())
    wrong = st.one_of(
        real_ids,
        other_kind,
        unknown,
        st.sampled_from(MALFORMED_IDS),
        TEXT,
        real_ids.map(lambda i: i.upper()),
        st.integers(min_value=-(2**40), max_value=2**40),
    )
    # About three in four are real ids of the right kind, so most operations get past their ids.
    return st.one_of(right_kind, right_kind, right_kind, wrong).map(
        lambda v: nodes.Int(v) if isinstance(v, int) else nodes.String(v)
    )


# The kind of id an argument (or input field) takes, by its name; `id` by the field's name prefix.
KIND_OF_ARGUMENT = {
    "conversationId": Kind.CONVERSATION,
    "ids": Kind.CONVERSATION,
    "rootId": Kind.MESSAGE,
    "parentId": Kind.MESSAGE,
    "fromId": Kind.MESSAGE,
    "messageId": Kind.MESSAGE,
    "userId": Kind.USER,
    "actorId": Kind.USER,
    "profileId": Kind.RATE_LIMIT_PROFILE,
}
KIND_OF_FIELD = [
    ("conversation", Kind.CONVERSATION),
    ("message", Kind.MESSAGE),
    ("thread", Kind.MESSAGE),
    ("run", Kind.RUN),
    ("invite", Kind.INVITE),
    ("apiKey", Kind.API_KEY),
    ("rateLimitProfile", Kind.RATE_LIMIT_PROFILE),
    ("user", Kind.USER),
    ("participant", Kind.PARTICIPANT),
]


def with_real_ids(
    document: graphql.DocumentNode, real: list[str], cursors: dict[str, list[str]] | None = None
) -> graphql.DocumentNode:
    """Replaces each REAL placeholder by a seeded id of the kind its argument takes (any kind for
    `node(id)`, `targetId` and the like). `after` gets a real cursor of its connection a third of the
    time, null a third, and the generated string otherwise (deterministically, by that string's length)."""
    by_kind: dict[str, list[str]] = {}
    for value in real:
        by_kind.setdefault(value[:3], []).append(value)
    names: list[str] = []

    def kind_here() -> Kind | None:
        for name in reversed(names):
            if name in KIND_OF_ARGUMENT:
                return KIND_OF_ARGUMENT[name]
            if name != "id":
                return next((kind for prefix, kind in KIND_OF_FIELD if name.startswith(prefix)), None)
        return None

    def cursor_here(generated: str) -> graphql.ValueNode:
        pool = next((cursors[name] for name in reversed(names) if cursors and name in cursors), [])
        choice = len(generated) % 3
        if choice == 0 or (choice == 2 and not pool):
            return graphql.NullValueNode()
        if choice == 2:
            return nodes.String(pool[len(generated) % len(pool)])
        return nodes.String(generated)

    class Resolve(graphql.Visitor):
        def enter_field(self, node: graphql.FieldNode, *_: Any) -> None:
            names.append(node.name.value)

        def leave_field(self, node: graphql.FieldNode, *_: Any) -> None:
            names.pop()

        enter_argument = enter_object_field = enter_field  # type: ignore[assignment]
        leave_argument = leave_object_field = leave_field  # type: ignore[assignment]

        def enter_string_value(self, node: graphql.StringValueNode, *_: Any) -> Any:
            if names and names[-1] == "after":
                return cursor_here(node.value)
            if not node.value.startswith(REAL):
                return None
            kind = kind_here()
            pool = by_kind.get(kind.value, real) if kind is not None else real
            return nodes.String(pool[int(node.value[len(REAL) :]) % len(pool)])

    return graphql.visit(document, Resolve())


# Strings: words the API accepts (providers, languages, emails, tags) often enough that mutations get
# past validation, and any text, blanks and lengths just past the limits otherwise.
STRING_NODES = st.one_of(
    st.sampled_from(
        [
            "hello world",
            "x",
            "echo",
            "openai",
            "english",
            "simple",
            "gpt-4o",
            "Same",
            " padded ",
            '"quoted phrase" OR -x',
        ]
    ),
    NAME.map(lambda n: f"{n}@example.com"),
    TEXT,
    st.sampled_from(["", " ", "\n\t", "a\x00b"]),
    st.sampled_from([65, 101, 129, 256, 501, 10_001, 100_001]).map(lambda n: "s" * n),
).map(nodes.String)


def scalars(real_ids: list[str]) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    return {
        "ID": id_nodes(real_ids),
        "String": STRING_NODES,
        "DateTime": DATETIME_NODES,
        "Date": DATE_NODES,
        "JSON": JSON_NODES,
    }


# --- documents -------------------------------------------------------------------------------------


def lift_arguments(document: graphql.DocumentNode) -> tuple[graphql.DocumentNode, dict[str, Any]]:
    """The same operation with every literal argument passed as a variable of the argument's type."""
    type_info = graphql.TypeInfo(SCHEMA)
    variables: dict[str, Any] = {}
    definitions: list[graphql.VariableDefinitionNode] = []

    class Lift(graphql.Visitor):
        def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
            argument = type_info.get_argument()
            if argument is None or isinstance(node.value, graphql.VariableNode):
                return None
            name = f"v{len(variables)}"
            variables[name] = graphql.value_from_ast_untyped(node.value)
            variable = graphql.VariableNode(name=graphql.NameNode(value=name))
            definitions.append(
                graphql.VariableDefinitionNode(variable=variable, type=graphql.parse_type(str(argument.type)))
            )
            return graphql.ArgumentNode(name=node.name, value=variable)

    lifted = graphql.visit(document, graphql.TypeInfoVisitor(type_info, Lift()))
    operation = lifted.definitions[0]
    assert isinstance(operation, graphql.OperationDefinitionNode)
    operation = graphql.OperationDefinitionNode(
        operation=operation.operation,
        variable_definitions=tuple(definitions),
        selection_set=operation.selection_set,
    )
    return graphql.DocumentNode(definitions=(operation,)), variables


@dataclass
class Case:
    query: str
    variables: dict[str, Any]


def documents(
    operation: str, custom: dict[str, st.SearchStrategy[graphql.ValueNode]], mode: Mode
) -> st.SearchStrategy[graphql.DocumentNode]:
    """Operations on one root field (a query: up to three). One field at a time generates fast, spreads the
    budget evenly over the fields, and lets every mutation run: a failed non-null mutation field stops
    the ones after it."""
    root, make, most = (
        (SCHEMA.query_type, queries, 3) if operation == "query" else (SCHEMA.mutation_type, mutations, 1)
    )
    assert root is not None
    names = sorted(root.fields)
    if mode is Mode.NEGATIVE:  # only fields with something to violate in their arguments
        sites = {site.path[0].field_name for site in enumerate_violation_sites(SCHEMA, root)}
        names = [name for name in names if name in sites]
    per_field = {
        name: make(SCHEMA, fields=[name], custom_scalars=custom, print_ast=lambda d: d, mode=mode)
        for name in names
    }

    @st.composite
    def merged(draw: st.DrawFn) -> graphql.DocumentNode:
        names = draw(st.lists(st.sampled_from(sorted(per_field)), min_size=1, max_size=most, unique=True))
        operations = [draw(per_field[name]).definitions[0] for name in names]
        assert all(isinstance(o, graphql.OperationDefinitionNode) for o in operations)
        selections = tuple(s for o in operations for s in o.selection_set.selections)  # type: ignore[attr-defined]
        return graphql.DocumentNode(
            definitions=(
                graphql.OperationDefinitionNode(
                    operation=operations[0].operation,  # type: ignore[attr-defined]
                    variable_definitions=(),
                    selection_set=graphql.SelectionSetNode(selections=selections),
                ),
            )
        )

    return merged()


def cases(kind: str, real_ids: list[str], cursors: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    custom = scalars(real_ids)
    mode = Mode.NEGATIVE if kind == "invalid" else Mode.POSITIVE
    operations = {"queries": ["query"], "mutations": ["mutation"]}.get(kind, ["query", "mutation"])
    generated = st.one_of([documents(operation, custom, mode) for operation in operations])

    def build(document: graphql.DocumentNode, as_variables: bool) -> Case:
        document = with_real_ids(document, real_ids, cursors)
        if as_variables and mode is Mode.POSITIVE:
            document, variables = lift_arguments(document)
            return Case(graphql.print_ast(document), variables)
        return Case(graphql.print_ast(document), {})

    return st.builds(build, generated, st.booleans())


# --- the fuzzer ------------------------------------------------------------------------------------


@dataclass
class Fuzzer:
    """Sends cases as one caller; records every answer that breaks the contract."""

    label: str
    url: str
    token: str | None
    repair: Callable[[Case], None] = lambda case: None
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    internal: int = 0
    answered: int = 0
    server_errors: int = 0

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def send(self, case: Case) -> None:
        CASES[self.label] += 1
        response = self.http.post("/graphql", json={"query": case.query, "variables": case.variables})
        problems = []
        if response.status_code >= 500:
            self.server_errors += 1
            problems.append(f"HTTP {response.status_code}")
        try:
            body = response.json()
        except json.JSONDecodeError:
            body = None
            problems.append("the body is not JSON")
        errors = (body.get("errors") or []) if isinstance(body, dict) else []
        if isinstance(body, dict) and "data" not in body and not errors:
            problems.append("neither data nor errors")
        for error in errors:
            code = (error.get("extensions") or {}).get("code")
            self.codes[str(code)] += 1
            if code == "INTERNAL":
                self.internal += 1
                problems.append(f"INTERNAL at {error.get('path')}")
            elif code is None:
                problems.append(f"an error without a code: {error.get('message')!r}")
        if not errors:
            self.codes["ok"] += 1
        data = body.get("data") if isinstance(body, dict) else None
        self.answered += sum(v is not None for v in data.values()) if isinstance(data, dict) else 0
        if problems:
            self.failures.append(
                f"{'; '.join(problems)}\n  query: {case.query}\n  variables: {json.dumps(case.variables)[:2000]}\n"
                f"  response ({response.status_code}): {response.text[:600]}"
            )
        self.repair(case)

    def run(self, strategy: st.SearchStrategy[Case], budget: int) -> None:
        budget = round(budget * SCALE)

        @settings(max_examples=budget, **FUZZ_SETTINGS)  # type: ignore[arg-type]
        @given(case=strategy)
        def fuzz(case: Case) -> None:
            self.send(case)

        if SEED is not None:
            fuzz = seed(int(SEED))(fuzz)

        fuzz()
        self.http.close()
        print(
            f"\nfuzz {self.label}: {CASES[self.label]} cases, {self.internal} INTERNAL, {self.server_errors} 5xx "
            f"(root fields answered: {self.answered}; errors: {dict(self.codes.most_common())})"
        )
        shown = "\n".join(self.failures[:8])
        assert not self.failures, (
            f"{len(self.failures)} of {CASES[self.label]} cases broke the contract:\n{shown}"
        )
        assert CASES[self.label] >= budget, f"only {CASES[self.label]} of {budget} cases were tried"


# --- seeded data -----------------------------------------------------------------------------------


@dataclass
class World:
    admin: Actor
    member: Actor
    ids: list[str]
    cursors: dict[str, list[str]]


INVITE = "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }"
KEY = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "v") { apiKey { id } } }'
SHARE = "mutation($c: ID!) { shareLinkCreate(conversationId: $c) { id } }"
BOOKMARK = 'mutation($m: ID!) { bookmarkSet(messageId: $m, note: "fuzz") { id } }'
LINK = "mutation($f: ID!, $t: ID!) { conversationLink(fromId: $f, toId: $t, kind: RELATED) { id } }"
DETAILS = "query($c: ID!) { conversation(id: $c) { participants { id } threads(first: 5) { nodes { id } } } }"
CURSORS = """query($c: ID!) {
  conversations(first: 2) { edges { cursor } } users(first: 2) { edges { cursor } }
  search(input: {first: 2}) { edges { cursor } }
  conversation(id: $c) { threads(first: 2) { edges { cursor } } messages(first: 2) { edges { cursor } }
    runs(first: 2) { edges { cursor } } } }"""


def cursors(actor: Actor, conversation: str) -> dict[str, list[str]]:
    """Real cursors of each connection, as `actor` sees them."""
    data = actor.client.ok(CURSORS, {"c": conversation})
    connections = {**data.pop("conversation"), **data}
    return {name: [edge["cursor"] for edge in value["edges"]] for name, value in connections.items()}


@pytest.fixture
def settled(server: ServerThread, loop: Loop, dsn: str) -> Iterator[None]:
    """Afterwards (even when seeding failed), no run executes: the next test's truncation would deadlock."""
    yield
    settle(loop, dsn, server.app.state.services.settings.run_queue)


@pytest.fixture
def world(admin: Actor, make_user: Callable[..., Actor], server: ServerThread, settled: None) -> World:
    """Objects of every kind: the member's own conversation and the admin's (one shared with the member,
    one private), threads and replies, an invite, a run, a victim user with a key, a rate-limit profile."""
    member = make_user(admin, role="MEMBER")
    victim = make_user(admin, role="MEMBER")
    shared = create_conversation(admin, "shared", tags=["a", "b"])
    private = create_conversation(admin, "private")
    own = create_conversation(member, "own", tags=["m"])
    ids = [admin.tenant_id, admin.user_id, member.user_id, victim.user_id, shared, private, own]
    for actor, conversation in [(admin, private), (member, own), (admin, shared)]:
        root = start_thread(actor, conversation, "root words")
        first = reply(actor, root, "first reply")
        nested = reply(actor, first, "nested reply")
        ids += [root, first, nested]
    ok = admin.client.ok
    invite = ok(INVITE, {"c": shared, "u": member.user_id})["participantInvite"]["id"]
    run = ok(RUN_CREATE, {"i": {"messageId": nested, "provider": "echo"}})["runCreate"]["id"]
    key = ok(KEY, {"u": victim.user_id})["apiKeyCreate"]["apiKey"]["id"]
    profile = ok('mutation { rateLimitProfileCreate(input: {name: "fuzz"}) { id } }')[
        "rateLimitProfileCreate"
    ]["id"]
    ids += [invite, run, key, profile]
    # The kinds of issue 18: a share link, a folder, a bookmark, a link between conversations, a file.
    ids.append(ok(SHARE, {"c": shared})["shareLinkCreate"]["id"])
    ids.append(ok('mutation { folderCreate(name: "fuzz") { id } }')["folderCreate"]["id"])
    ids.append(ok(BOOKMARK, {"m": nested})["bookmarkSet"]["id"])
    ids.append(ok(LINK, {"f": shared, "t": private})["conversationLink"]["id"])
    uploaded = httpx.post(
        f"{server.url}/files",
        files={"file": ("fuzz.txt", b"fuzz file", "text/plain")},
        headers={"Authorization": f"Bearer {admin.api_key}"},
        timeout=60,
    )
    assert uploaded.status_code in (200, 201), uploaded.text
    ids.append(uploaded.json()["id"])
    details = ok(DETAILS, {"c": shared})["conversation"]
    ids += [p["id"] for p in details["participants"]] + [t["id"] for t in details["threads"]["nodes"]]
    assert {i[:3] for i in ids} >= {k.value for k in Kind} - {Kind.RUN_STEP}, ids
    pools: dict[str, list[str]] = {}
    for actor, conversation in [(admin, shared), (member, own)]:
        for name, found in cursors(actor, conversation).items():
            pools.setdefault(name, []).extend(found)
    return World(admin, member, ids, pools)


@pytest.fixture
def restore_budgets(world: World, loop: Loop, dsn: str) -> Iterator[Callable[[Case], None]]:
    """Keeps fuzzing from locking itself out: after a case that touched rate-limit profiles (say, a tenant
    default of 0 requests) or every 100 cases, the tenant is back on the built-in budgets with full buckets."""
    tenant = decode_id(world.admin.tenant_id, Kind.TENANT)
    conn = loop.run(asyncpg.connect(dsn))
    sent = Counter[str]()

    async def reset(profiles: bool) -> None:
        if profiles:
            await conn.execute("DELETE FROM rate_limit_assignment WHERE tenant_id = $1", tenant)
            await conn.execute(
                "UPDATE rate_limit_profile SET is_default = false WHERE tenant_id = $1", tenant
            )
        await conn.execute("DELETE FROM rate_limit_bucket WHERE tenant_id = $1", tenant)

    def repair(case: Case) -> None:
        sent["n"] += 1
        profiles = "rateLimitProfile" in case.query
        if profiles or sent["n"] % 100 == 0:
            loop.run(reset(profiles))

    yield repair
    loop.run(conn.close())


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["queries", "mutations", "invalid"])
def test_fuzz_as_admin(
    world: World, server: ServerThread, restore_budgets: Callable[[Case], None], kind: str
) -> None:
    fuzzer = Fuzzer(f"admin {kind}", server.url, world.admin.api_key, restore_budgets)
    fuzzer.run(cases(kind, world.ids, world.cursors), BUDGET[("admin", kind)])


@pytest.mark.parametrize("kind", ["queries", "mutations"])
def test_fuzz_as_member(
    world: World, server: ServerThread, restore_budgets: Callable[[Case], None], kind: str
) -> None:
    fuzzer = Fuzzer(f"member {kind}", server.url, world.member.api_key, restore_budgets)
    fuzzer.run(cases(kind, world.ids, world.cursors), BUDGET[("member", kind)])


def test_fuzz_without_credentials(world: World, server: ServerThread) -> None:
    fuzzer = Fuzzer("anonymous", server.url, None)
    fuzzer.run(cases("any", world.ids, world.cursors), BUDGET[("anonymous", "any")])


def test_the_id_strategy_mixes_real_unknown_and_malformed_ids() -> None:
    real = [encode_id(Kind.CONVERSATION, uuid.UUID(int=1)), encode_id(Kind.MESSAGE, uuid.UUID(int=2))]
    seen: list[Any] = []

    @settings(max_examples=200, **FUZZ_SETTINGS)  # type: ignore[arg-type]
    @given(node=id_nodes(real))
    def collect(node: graphql.ValueNode) -> None:
        seen.append(getattr(node, "value", None))

    collect()
    assert set(real) <= set(seen)
    assert any(isinstance(v, str) and v[:3] in {k.value for k in Kind} and v not in real for v in seen)
    assert any(isinstance(v, str) and len(v) != 36 for v in seen)
