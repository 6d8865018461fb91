"""Counts GraphQL operations by type and errors by `extensions.code` (listed first, so it sees them coded)."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from threadline.observability.metrics import METRICS


class OperationMetrics(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        execution = self.execution_context
        try:
            kind = execution.operation_type.value
        except Exception:  # noqa: BLE001 - unparseable documents have no type
            kind = "invalid"
        METRICS.operations[kind] += 1
        for error in getattr(execution.result, "errors", None) or ():
            code = (error.extensions or {}).get("code", "INTERNAL")
            METRICS.errors[str(code)] += 1
