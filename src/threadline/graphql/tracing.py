"""Optional OpenTelemetry tracing (THREADLINE_TRACING, the `tracing` extra; issue 14 item 5).

On: a span per GraphQL operation, its parsing and validation and each resolver (Strawberry's extension), and a
span per asyncpg statement, sent to the tracer provider OpenTelemetry is configured with (`OTEL_*` variables,
`opentelemetry-instrument`, or the embedding program's own). Off (the default): nothing is imported, installed
or called, so it costs nothing.

Spans carry no caller content (ARCHITECTURE.md, Trust: deleted means gone, and a trace backend is out of
reach of deletes and erasure): not the query text (a document may hold an inline message), not resolver
arguments, not statement parameters (asyncpg's instrumentation records the SQL text, which holds none).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from strawberry.extensions import LifecycleStep
from strawberry.extensions.tracing import OpenTelemetryExtension


class ContentFreeTracing(OpenTelemetryExtension):
    """Strawberry's extension without the query text and with no resolver arguments on spans."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(arg_filter=lambda args, info: {}, **kwargs)

    def on_operation(self) -> Generator[None, None, None]:
        name = self.execution_context.operation_name
        span = self._tracer.start_span(
            f"GraphQL Query: {name}" if name else "GraphQL Query", kind=SpanKind.SERVER
        )
        span.set_attribute("component", "graphql")
        self._span_holder[LifecycleStep.OPERATION] = span
        yield
        if not name and self.execution_context.operation_name:  # known once the document is parsed
            span.update_name(f"GraphQL Query: {self.execution_context.operation_name}")
        span.end()


def traced(schema: Any) -> Any:
    """`schema` (a schema built for this app alone) with operation and resolver spans."""
    schema.extensions = [*schema.extensions, ContentFreeTracing]
    return schema


def instrument_database() -> Any:
    """asyncpg statements as spans (process-wide); returns the instrumentor, to `uninstrument()` at shutdown."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=trace.get_tracer_provider())
    return instrumentor
