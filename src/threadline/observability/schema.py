"""Counts GraphQL operations by type and errors by `extensions.code` (listed first, so it sees them coded)."""

from __future__ import annotations

from collections.abc import Iterator

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
        for error in getattr(self.execution_context.result, "errors", None) or ():
            code = (error.extensions or {}).get("code", "INTERNAL")
            METRICS.errors[str(code)] += 1

    def _count_operation(self) -> None:
        try:
            kind = self.execution_context.operation_type.value
        except Exception:  # noqa: BLE001 - unparseable documents have no type
            kind = "invalid"
        METRICS.operations[kind] += 1
