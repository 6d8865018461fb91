"""Idempotency keys in the API: the `Idempotency-Key` header, `clientMutationId`, and the checks on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    OperationType,
    get_operation_ast,
)
from starlette.requests import Request
from starlette.responses import Response
from strawberry.extensions import SchemaExtension

from threadline.db import Database
from threadline.errors import ThreadlineError, bad_input
from threadline.graphql.context import Context, Info
from threadline.graphql.selections import root_fields
from threadline.idempotency.service import KEYS_PER_REQUEST_MAX, Outcome, once, validate_key

HEADER = "Idempotency-Key"
ARGUMENT = "clientMutationId"
REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on the answer to a retry (as Stripe's API does)

R = TypeVar("R")


def header_key(context: Any) -> str | None:
    """The request's Idempotency-Key header (HTTP only: a WebSocket's handshake headers cover every operation)."""
    request = getattr(context, "request", None)
    if not isinstance(request, Request):
        return None
    return request.headers.get(HEADER)


def key_for(info: Info, client_mutation_id: str | None) -> str | None:
    header = header_key(info.context)
    if client_mutation_id is not None:
        validate_key(client_mutation_id, ARGUMENT)
        if header is not None and header != client_mutation_id:
            raise bad_input(f"The {HEADER} header and `{ARGUMENT}` differ; send one key", argument=ARGUMENT)
        return client_mutation_id
    return header


async def run_once(
    info: Info,
    client_mutation_id: str | None,
    arguments: Mapping[str, Any],
    write: Callable[[Database], Awaitable[R]],
    ids_of: Callable[[R], list[Any]],
) -> Outcome[R]:
    """`write` once per idempotency key of this field (the operation is the field's name)."""
    principal = await info.context.principal()
    key = key_for(info, client_mutation_id)
    outcome = await once(
        info.context.db, info.context.settings, principal, key, info.field_name, arguments, write, ids_of
    )
    response = info.context.response
    if outcome.replayed and isinstance(response, Response):
        response.headers[REPLAYED_HEADER] = "true"
    return outcome


class IdempotencyKeys(SchemaExtension):
    """Before a mutation runs: at most KEYS_PER_REQUEST_MAX keyed fields, and an Idempotency-Key header only on
    a request of exactly one mutation field that takes a key (silently ignoring it elsewhere would leave a
    client believing a retry is safe when it is not). The header is ignored on queries: reads are safe to retry."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        try:
            self._check(execution.context)
        except ThreadlineError as refusal:
            execution.result = GraphQLExecutionResult(
                data=None, errors=[GraphQLError(refusal.message, original_error=refusal)]
            )
        yield

    def _check(self, context: Context | None) -> None:
        execution = self.execution_context
        document = execution.graphql_document
        if document is None:
            return
        operation = get_operation_ast(document, execution.operation_name)
        if operation is None or operation.operation is not OperationType.MUTATION:
            return
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        fields = root_fields(operation.selection_set, fragments)
        keyed = [f for f in fields if any(a.name.value == ARGUMENT for a in f.arguments or ())]
        if len(keyed) > KEYS_PER_REQUEST_MAX:
            raise bad_input(
                f"A request carries at most {KEYS_PER_REQUEST_MAX} `{ARGUMENT}` keys; it has {len(keyed)}",
                argument=ARGUMENT,
                limit=KEYS_PER_REQUEST_MAX,
            )
        header = header_key(context)
        if header is None:
            return
        validate_key(header, HEADER)
        if len(fields) != 1:
            raise bad_input(
                f"The {HEADER} header covers a request with exactly one mutation field; this one has {len(fields)} "
                f"(give each field its own `{ARGUMENT}` instead)",
                argument=HEADER,
            )
        mutation_type = execution.schema._schema.mutation_type
        definition = mutation_type.fields.get(fields[0].name.value) if mutation_type is not None else None
        if definition is None:
            return  # unknown field: validation answers it
        if ARGUMENT not in definition.args:
            raise bad_input(
                f"`{fields[0].name.value}` does not take an idempotency key; send it without the {HEADER} header",
                argument=HEADER,
            )
