"""The direct-frame path reaches server internals through one module, read from the source.

streaming/transport.py alone touches uvicorn's WebSocket protocol, the websockets connection and strawberry's
running operations (its docstring says what and why). Everywhere else in streaming/ and graphql/ works with
its interface: no other module imports `websockets` or uvicorn's modules, and none reads another object's
private attribute (`x._y` or getattr(x, "_y")) except the few listed below with their reasons. The per-event
and per-operation resets of a socket's context go through Context.forget_loaders.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "threadline"
SEAM = "streaming/transport.py"
SERVER_PACKAGES = ("websockets", "uvicorn")
# Who may import a server package at all, and why.
SERVER_IMPORTERS = {
    SEAM: "the seam itself",
    "cli.py": "`threadline serve` runs uvicorn (uvicorn.run, its public entry point)",
    "serving.py": "`threadline serve --workers N` runs uvicorn's supervisor (uvicorn.run, its public entry point)",
}
# Private attributes of other objects still read in streaming/ and graphql/, each with its reason. They are not
# part of the direct-frame path; pyproject.toml bounds strawberry-graphql for them too.
PRIVATE_READS = {
    (
        "graphql/limits.py",
        "_schema",
    ): "strawberry keeps the GraphQLSchema its validation runs on in Schema._schema",
    (
        "graphql/persisted.py",
        "_schema",
    ): "strawberry's GraphQLSchema, for the types of a document's literals (caller content is not kept), as limits.py",
    (
        "graphql/budget.py",
        "_raw_info",
    ): "graphql-core's resolve info (field nodes, fragments) behind strawberry's Info",
    (
        "graphql/fast_execution.py",
        "_threadline_attribute",
    ): "not foreign: the module's own mark on its resolvers",
    (
        "graphql/budget.py",
        "_since_yield",
    ): "not foreign: the module's own budget, saved and restored around a re-run (ready.py)",
    (
        "graphql/ready.py",
        "_raw_info",
    ): "graphql-core's resolve info (field nodes, fragments) behind strawberry's Info, as in budget.py",
    (
        "graphql/ready.py",
        "_principal",
    ): "not foreign: our Context's authenticated principal, read without authenticating (None: not yet)",
    (
        "graphql/extension_hooks.py",
        "_GeneratorContextManager",
    ): "contextlib's class behind @contextmanager, built once per hook instead of per request",
    (
        "graphql/extension_hooks.py",
        "_AsyncGeneratorContextManager",
    ): "contextlib's class behind @asynccontextmanager, as above",
    (
        "graphql/http_fast.py",
        "_body",
    ): "starlette's cached request body: the lean POST path has read it already (request.body() answers from it)",
    (
        "graphql/http_fast.py",
        "_handle_errors",
    ): "strawberry's view hook for errors, called as the view's own run does (tests/test_http_lean.py compares)",
    (
        "graphql/lean_operation.py",
        "_schema",
    ): "strawberry keeps the GraphQLSchema it executes on in Schema._schema, as in limits.py",
    (
        "graphql/lean_operation.py",
        "_get_execute_function",
    ): "strawberry's choice of graphql-core's execute (incremental or not), called as Schema.execute does",
    (
        "graphql/fast_execution.py",
        "_relevant_sub_fields",
    ): "graphql-core's sub-field memo, which its per-event copies shared: each event's copy gets its own",
    (
        "graphql/fast_execution.py",
        "_leaf_rows",
    ): "not foreign: the executor's own cache of one-pass list completions, on its per-event copy",
}


def _modules(*packages: str) -> dict[str, ast.Module]:
    paths = (
        [p for package in packages for p in sorted((SRC / package).rglob("*.py"))]
        if packages
        else sorted(SRC.rglob("*.py"))
    )
    return {p.relative_to(SRC).as_posix(): ast.parse(p.read_text(), str(p)) for p in paths}


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _private_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """`x._y` where x is not self/cls, and getattr/hasattr(x, "_y"): reads of another object's private state."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
            and not node.args[1].value.startswith("__")
        ):
            found.append((node.lineno, node.args[1].value))
    return found


def test_only_the_seam_imports_server_packages() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, tree in _modules().items()
        if name not in SERVER_IMPORTERS
        for imported in sorted(_imported(tree))
        if imported.split(".")[0] in SERVER_PACKAGES
    ]
    assert offenders == []
    # cli.py and serving.py run the server; they do not reach into its modules.
    for runner in ("cli.py", "serving.py"):
        modules = _imported(_modules()[runner])
        assert all(m == "uvicorn" for m in modules if m.split(".")[0] in SERVER_PACKAGES), runner


def test_no_private_reads_outside_the_seam() -> None:
    offenders = [
        f"{name}:{line} reads {attr}"
        for name, tree in _modules("streaming", "graphql").items()
        if name != SEAM
        for line, attr in _private_reads(tree)
        if (name, attr) not in PRIVATE_READS
    ]
    assert offenders == []


def test_the_seam_is_used_by_the_direct_path_and_the_view() -> None:
    modules = _modules()
    users = {name for name, tree in modules.items() if "threadline.streaming.transport" in _imported(tree)}
    assert {"streaming/direct.py", "graphql/view.py", "app.py"} <= users
