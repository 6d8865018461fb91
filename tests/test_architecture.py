"""The import contract of ARCHITECTURE.md's layers, read from the source (every import statement, also the
ones inside functions and under TYPE_CHECKING: a deferred import is still a dependency).

- Strawberry appears only in `types.py`, `schema.py`, `graphql/` and `streaming/` (and the exceptions below).
- Domains never import `streaming/`: they publish events and the hub delivers them. Only the wiring
  (`app.py`, the root `schema.py`) and the GraphQL plumbing (`graphql/`) may.
- No two modules import each other, directly or round a longer loop.
- Only `events/announce.py` calls `events.publish.publish`: services announce through its typed `publish_*`.
- SQL statements (a string literal starting with SELECT, INSERT INTO, UPDATE ... SET, DELETE FROM or
  WITH name AS) live only in repository modules (`repository.py`, `<topic>_repository.py`) and the
  modules listed in SQL_EXEMPT (migrations live outside the package, in migrations/).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "threadline"

# Packages that are not domains: plumbing and the event hub itself.
NOT_DOMAINS = frozenset({"db", "graphql", "streaming"})
# Modules allowed to import strawberry beyond the layout rule, each with its reason. None today.
STRAWBERRY_EXCEPTIONS: dict[str, str] = {}
# The one module that may call events.publish.publish (the untyped publisher).
PUBLISH = f"{PACKAGE}.events.publish"
PUBLISHERS = frozenset({f"{PACKAGE}.events.announce"})
# Modules allowed to hold SQL outside repository.py files, each with its reason.
SQL_EXEMPT: dict[str, str] = {
    f"{PACKAGE}.db.migrate": "takes and releases the migrations' advisory lock: plumbing, no table of a domain",
}
# A statement at the start of a string literal (leading whitespace allowed): SELECT (with or without FROM:
# `SELECT 1` and `SELECT pg_notify(...)` are statements too), INSERT INTO, UPDATE ... SET, DELETE FROM, or
# a CTE. Upper case, as the code writes SQL; English in docstrings and messages ("Select a model", "delete
# from the list") does not match.
SQL_STATEMENT = re.compile(
    r"\A\s*(?:SELECT\s|INSERT\s+INTO\b|UPDATE\s+\w+[\s\S]*?\bSET\b|DELETE\s+FROM\b|WITH\s+\w+\s+AS\b)"
)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # the module as written, resolved (relative imports made absolute)
    line: int

    def where(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def module_files(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    modules: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    found: list[Import] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                # `from threadline.threads import service` imports the module threadline.threads.service.
                submodule = f"{base}.{alias.name}"
                found.append(Import(module, submodule if submodule in modules else base, node.lineno))
    return found


def internal_target(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an import loads (the longest known prefix), or None for third-party code."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def all_imports(root: Path = SRC) -> tuple[dict[str, Path], list[Import]]:
    modules = module_files(root)
    return modules, [found for name, path in modules.items() for found in imports_of(name, path, modules)]


def publish_violations(modules: dict[str, Path]) -> list[str]:
    """Calls of events.publish.publish outside PUBLISHERS: `from ...events.publish import publish`, or
    `.publish` read off the module (however it was imported)."""
    found: list[str] = []
    for module, path in modules.items():
        if module in PUBLISHERS or module == PUBLISH:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases: set[str] = set()  # names the module events.publish is bound to here
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if node.module == PUBLISH and alias.name == "publish":
                        found.append(f"{module}:{node.lineno} imports {PUBLISH}.publish")
                    elif f"{node.module}.{alias.name}" == PUBLISH:
                        aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PUBLISH:
                        aliases.add(alias.asname or PUBLISH)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "publish"
                and ast.unparse(node.value) in aliases
            ):
                found.append(f"{module}:{node.lineno} uses {PUBLISH}.publish")
    return found


def sql_violations(modules: dict[str, Path]) -> list[str]:
    """String literals (f-strings by their first literal part) that start with a SQL statement, in a module
    that is neither a repository module nor in SQL_EXEMPT."""
    found: list[str] = []
    for module, path in modules.items():
        if path.name.endswith("repository.py") or module in SQL_EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            text: object = None
            if isinstance(node, ast.Constant):
                text = node.value
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                text = node.values[0].value
            if isinstance(text, str) and SQL_STATEMENT.match(text):
                found.append(f"{module}:{node.lineno} holds SQL: {text.strip().splitlines()[0][:60]}")
    # An f-string's literal parts are Constants too: report each line once.
    return sorted(set(found))


def strawberry_violations(imports: list[Import]) -> list[str]:
    def allowed(module: str) -> bool:
        parts = module.split(".")
        return (
            parts[-1] in {"types", "schema"}
            or (len(parts) > 2 and parts[1] in {"graphql", "streaming"})
            or module in STRAWBERRY_EXCEPTIONS
        )

    return [
        found.where()
        for found in imports
        if found.imported.partition(".")[0] == "strawberry" and not allowed(found.importer)
    ]


def streaming_violations(imports: list[Import]) -> list[str]:
    def is_domain(module: str) -> bool:
        parts = module.split(".")
        return len(parts) > 2 and parts[1] not in NOT_DOMAINS

    streaming = f"{PACKAGE}.streaming"
    return [
        found.where()
        for found in imports
        if is_domain(found.importer)
        and (found.imported == streaming or found.imported.startswith(streaming + "."))
    ]


def import_cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for found in imports:
        target = internal_target(found.imported, modules)
        if target is not None and target != found.importer:
            graph[found.importer].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_strawberry_is_imported_only_by_types_schema_graphql_and_streaming() -> None:
    _, imports = all_imports()
    assert strawberry_violations(imports) == []


def test_no_domain_imports_streaming() -> None:
    _, imports = all_imports()
    assert streaming_violations(imports) == []


def test_no_module_imports_itself_round_a_cycle() -> None:
    modules, imports = all_imports()
    assert import_cycles(modules, imports) == []


def test_only_events_announce_calls_the_untyped_publish() -> None:
    modules, _ = all_imports()
    assert publish_violations(modules) == []


def test_sql_lives_only_in_repositories_and_the_ddl_modules() -> None:
    modules, _ = all_imports()
    assert sql_violations(modules) == []


def test_the_contract_sees_violations_in_a_package_that_breaks_it(tmp_path: Path) -> None:
    """The checks themselves can fail: a made-up package with one violation of each rule."""
    package = tmp_path / PACKAGE
    (package / "threads").mkdir(parents=True)
    (package / "streaming").mkdir()
    for init in (
        package / "__init__.py",
        package / "threads" / "__init__.py",
        package / "streaming" / "__init__.py",
    ):
        init.write_text("")
    (package / "streaming" / "hub.py").write_text("import strawberry\n")
    (package / "threads" / "types.py").write_text("import strawberry\nfrom . import service\n")
    (package / "threads" / "service.py").write_text(
        "def publish() -> None:\n    from threadline.streaming.hub import wake\n    from .types import Message\n"
    )
    (package / "threads" / "repository.py").write_text(
        "from strawberry import ID\nQ = 'SELECT id FROM message'\n"
    )
    (package / "threads" / "rules.py").write_text(
        "from threadline.events.publish import CHANNEL, publish\n"
        "from threadline.events import publish as p\n"
        "async def f(db, t):\n"
        '    """Select a thread from the list, then update the set."""\n'
        "    await p.publish(db, t)\n"
        '    await db.fetch(f"""\n  UPDATE message SET x = 1 WHERE id = {t}""")\n'
        '    return "SELECT 1", "INSERT INTO message VALUES (1)"\n'
    )
    modules, imports = all_imports(tmp_path)
    assert publish_violations(modules) == [
        "threadline.threads.rules:1 imports threadline.events.publish.publish",
        "threadline.threads.rules:5 uses threadline.events.publish.publish",
    ]
    assert sql_violations(modules) == [
        "threadline.threads.rules:6 holds SQL: UPDATE message SET x = 1 WHERE id =",
        "threadline.threads.rules:8 holds SQL: INSERT INTO message VALUES (1)",
        "threadline.threads.rules:8 holds SQL: SELECT 1",
    ]
    assert strawberry_violations(imports) == ["threadline.threads.repository:1 imports strawberry"]
    assert streaming_violations(imports) == ["threadline.threads.service:2 imports threadline.streaming.hub"]
    assert import_cycles(modules, imports) == [["threadline.threads.service", "threadline.threads.types"]]
