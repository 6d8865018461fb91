"""Counts GraphQL operations by type and errors by `extensions.code` (listed first, so it sees them coded), and
times each operation's execution by operation name (observability.metrics)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from threadline.observability.metrics import METRICS


class OperationMetrics(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            # A subscription's operation lasts as long as its stream and most end by being cancelled (the
            # client completes it, closes its socket or drops its HTTP stream): it still counts.
            self._count_operation()
            raise
        self._count_operation()
        count_errors(getattr(self.execution_context.result, "errors", None))

    def on_execute(self) -> Iterator[None]:
        started = time.perf_counter()
        execution = self.execution_context
        label = execution_label(execution.context, execution.operation_name)
        yield
        try:
            kind = execution.operation_type.value
        except Exception:  # noqa: BLE001 - unparseable documents have no type
            return
        if kind != "subscription":  # a subscription's execution lasts as long as its stream
            METRICS.resolver_duration.labels(label, kind).observe(time.perf_counter() - started)

    def _count_operation(self) -> None:
        try:
            kind = self.execution_context.operation_type.value
        except Exception:  # noqa: BLE001 - unparseable documents have no type
            kind = "invalid"
        METRICS.operations_total.labels(kind).inc()


def execution_label(context: object, operation_name: str | None) -> str:
    """The operation's metrics label, also given to the HTTP request's own histogram (observability.requests)."""
    label = METRICS.operation_label(operation_name)
    scope = getattr(getattr(context, "request", None), "scope", {})
    state = (
        scope.get("state") if scope.get("type") == "http" else None
    )  # a socket's scope outlives operations
    if isinstance(state, dict):
        state["operation_name"] = "_batch" if "operation_name" in state else label
    return label


def count_errors(errors: Iterable[GraphQLError] | None) -> None:
    """Counts an operation's (coded) errors by `extensions.code`."""
    for error in errors or ():
        code = (error.extensions or {}).get("code", "INTERNAL")
        METRICS.errors_total.labels(str(code)).inc()
