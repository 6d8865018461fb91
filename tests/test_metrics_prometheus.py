"""Metrics through prometheus-client (issue 14 item 5): request and resolver time histograms per operation name,
aggregated across the processes of `serve --workers`, behind the operator's token; optional OpenTelemetry
spans that carry no caller content.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.harness import (
    METRICS_HEADERS,
    Actor,
    Loop,
    ServerThread,
    create_admin,
    serve_process,
    test_settings,
)

TOKEN = METRICS_HEADERS["Authorization"].removeprefix("Bearer ")
REQUESTS = 'threadline_http_requests_total{status="200",transport="http"}'


def scrape(base_url: str) -> str:
    response = httpx.get(f"{base_url}/metrics", headers=METRICS_HEADERS, timeout=10)
    assert response.status_code == 200
    return response.text


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def named(operation: str) -> dict[str, str]:
    return {"query": f"query {operation} {{ __typename }}", "operationName": operation}


@pytest.fixture(scope="module")
def two_workers(dsn: str) -> Iterator[str]:
    with serve_process(
        dsn, THREADLINE_WORKERS="2", THREADLINE_RUN_WORKERS="0", THREADLINE_METRICS_TOKEN=TOKEN
    ) as url:
        yield url


def test_request_and_resolver_time_are_histograms_by_operation_name(
    server: ServerThread, admin: Actor
) -> None:
    request = 'threadline_graphql_request_duration_seconds_count{operation="%s"}'
    resolver = 'threadline_graphql_resolver_duration_seconds_count{operation="%s",type="%s"}'
    before = scrape(server.url)
    for _ in range(3):
        admin.client.http.post("/graphql", json={"query": "query ViewerPage { viewer { id } }"})
    admin.client.ok(
        'mutation Touch($u: ID!) { apiKeyCreate(userId: $u, name: "m") { secret } }', {"u": admin.user_id}
    )
    admin.client.ok("{ viewer { id } }")
    after = scrape(server.url)
    assert value(after, request % "ViewerPage") - value(before, request % "ViewerPage") == 3
    assert (
        value(after, resolver % ("ViewerPage", "query")) - value(before, resolver % ("ViewerPage", "query"))
        == 3
    )
    assert (
        value(after, resolver % ("Touch", "mutation")) - value(before, resolver % ("Touch", "mutation")) == 1
    )
    anonymous = resolver % ("_anonymous", "query")
    assert value(after, anonymous) - value(before, anonymous) == 1
    # Cumulative buckets up to +Inf, as Prometheus expects of a histogram.
    assert 'threadline_graphql_request_duration_seconds_bucket{le="+Inf",operation="ViewerPage"} ' in after


def test_client_chosen_operation_names_do_not_grow_the_labels(server: ServerThread, admin: Actor) -> None:
    long_name = "Q" + "x" * 80  # beyond 64 characters: not kept as a label
    request = 'threadline_graphql_request_duration_seconds_count{operation="_other"}'
    before = scrape(server.url)
    admin.client.http.post("/graphql", json=named(long_name))
    after = scrape(server.url)
    assert long_name not in after
    assert value(after, request) - value(before, request) == 1


def test_metrics_of_two_workers_add_up_whichever_answers_the_scrape(two_workers: str) -> None:
    before = scrape(two_workers)
    for _ in range(30):
        with httpx.Client(base_url=two_workers, timeout=30) as http:  # a new connection: either worker
            assert http.post("/graphql", json=named("Spread")).status_code == 200
    scrapes = [scrape(two_workers) for _ in range(6)]  # answered by either worker
    count = 'threadline_graphql_request_duration_seconds_count{operation="Spread"}'
    for text in scrapes:
        assert value(text, count) == 30
        assert value(text, REQUESTS) - value(before, REQUESTS) == 30
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in scrapes[-1].splitlines()
        if line.startswith("threadline_worker_http_requests{")
    ]
    assert len(served) == 2 and all(n > 0 for n in served), "both workers answered, each under its pid"


def test_metrics_of_workers_keep_the_token_rule(two_workers: str) -> None:
    assert httpx.get(f"{two_workers}/metrics", timeout=10).status_code == 401
    wrong = httpx.get(f"{two_workers}/metrics", headers={"Authorization": "Bearer guessed"}, timeout=10)
    assert wrong.status_code == 401
    assert "threadline_" not in wrong.text


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another tracer provider is installed in this process")
    return exporter


def test_tracing_spans_operations_and_statements_without_content(
    spans: InMemorySpanExporter, dsn: str, loop: Loop
) -> None:
    traced = ServerThread(test_settings(dsn, migrate_on_start=False, tracing_enabled=True))
    traced.start()
    try:
        admin = create_admin(loop, dsn, traced.url)
        spans.clear()
        secret_title = "a title only the caller may know"
        admin.client.ok(
            'mutation Create { conversationCreate(input: {title: "' + secret_title + '"}) { id } }'
        )
        finished = spans.get_finished_spans()
        names = [span.name for span in finished]
        assert "GraphQL Query: Create" in names
        assert "GraphQL Parsing" in names and "GraphQL Validation" in names
        assert any(span.attributes and "db.system" in str(dict(span.attributes)) for span in finished)
        for span in finished:
            assert secret_title not in str(dict(span.attributes or {})), span.name
        admin.client.http.close()
    finally:
        traced.stop()


def test_tracing_off_makes_no_spans(spans: InMemorySpanExporter, server: ServerThread, admin: Actor) -> None:
    spans.clear()
    admin.client.ok("query Untraced { viewer { id } }")
    assert spans.get_finished_spans() == ()
