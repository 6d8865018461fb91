"""Prometheus metrics (prometheus-client), aggregated over every process of `threadline serve --workers N`.

One process: the values live in this process. Several (serving.py sets PROMETHEUS_MULTIPROC_DIR before the
workers start): each worker writes its values to files in that directory, and a scrape, whichever worker
answers it, reads them all (counters and histograms summed; per-process gauges keep a `pid` label).

Counters and histograms are updated where things happen (observability.requests, observability.schema).
What the stream hub and the pool know is copied into gauges at most once a second by each worker, and by
the scraping worker for itself right before it answers.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from collections import Counter as Tally
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as multiproc

from threadline.runs.repository import count_by_status

ACTIVE_RUN_STATES = ("QUEUED", "IN_PROGRESS", "REQUIRES_ACTION", "CANCELLING")
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
SYNC_INTERVAL_SECONDS = 1.0
# Operation names are chosen by clients: label values are bounded (names seen first; the rest share one).
OPERATION_NAMES_MAX = 100
OTHER_OPERATION = "_other"
ANONYMOUS_OPERATION = "_anonymous"
_OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
# Request and resolver time: from a cached-credential read (~1 ms) to a 10,000-node tree (~1 s) and beyond.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` sample beside every counter
REGISTRY = CollectorRegistry(auto_describe=True)


class Metrics:
    def __init__(self) -> None:
        r = REGISTRY
        self.requests = Counter(
            "threadline_http_requests",
            "HTTP requests, multipart subscription streams and WebSocket sessions by transport and status "
            "(WebSockets: close code).",
            ["transport", "status"],
            registry=r,
        )
        self.request_seconds_total = Counter(
            "threadline_http_request_seconds", "Time spent serving HTTP requests.", registry=r
        )
        self.request_duration = Histogram(
            "threadline_graphql_request_duration_seconds",
            "GraphQL over HTTP requests from the first byte to the last, by operation name (a batch: _batch).",
            ["operation"],
            buckets=BUCKETS,
            registry=r,
        )
        self.resolver_duration = Histogram(
            "threadline_graphql_resolver_duration_seconds",
            "Execution of an operation's resolvers (after parsing, validation and limits), by operation name.",
            ["operation", "type"],
            buckets=BUCKETS,
            registry=r,
        )
        self.operations_total = Counter(
            "threadline_graphql_operations", "GraphQL operations by type.", ["type"], registry=r
        )
        self.errors_total = Counter(
            "threadline_graphql_errors", "GraphQL errors by extensions.code.", ["code"], registry=r
        )
        self.worker_requests = Gauge(
            "threadline_worker_http_requests",
            "HTTP requests served by each server process (a pid label per process under serve --workers).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.subscriptions = Gauge(
            "threadline_subscriptions_active",
            "Live subscriptions held by the server's processes.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.worker_subscriptions = Gauge(
            "threadline_worker_subscriptions_active",
            "Live subscriptions held by each server process (a pid label per process under serve --workers).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.events_published = Gauge(
            "threadline_events_published_total",
            "Position of the event log the server has read up to (events published by every process).",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.events_delivered = Counter(
            "threadline_events_delivered", "Events the server delivered to subscribers.", registry=r
        )
        self.stream_deliveries = Gauge(
            "threadline_stream_deliveries_total",
            "Events handed to subscriptions: written directly as a shared frame, or queued for the stock path.",
            ["path"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_connections = Gauge(
            "threadline_db_pool_connections",
            "Database pool connections by state.",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "threadline_db_pool_max", "Database pool size limit.", registry=r, multiprocess_mode="livesum"
        )
        self.runs = Gauge(
            "threadline_runs",
            "Runs not yet finished, by state (all processes).",
            ["state"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        # Written by the stream hub (it moves frames from direct to queued when a direct write falls back).
        self.stream_frames: Tally[str] = Tally()
        self._delivered_synced: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._synced_at = 0.0
        self._operation_names: set[str] = set()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered (prometheus_client checks and converts the values and takes a
        lock on every call, ~1.5 us, a few times per request; it keeps the child itself as long as the metric,
        and nothing here removes one). The label values are bounded where they are chosen."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_request(self, transport: str, status: int | str, seconds: float) -> None:
        self.child(self.requests, transport, str(status)).inc()
        if seconds:
            self.request_seconds_total.inc(seconds)
        if transport == "http":
            self.worker_requests.inc()

    def operation_label(self, name: str | None) -> str:
        """A bounded label for a client-chosen operation name."""
        if not name:
            return ANONYMOUS_OPERATION
        if name in self._operation_names:
            return name
        if len(self._operation_names) >= OPERATION_NAMES_MAX or not _OPERATION_NAME.fullmatch(name):
            return OTHER_OPERATION
        self._operation_names.add(name)
        return name

    def sync(self, services: Any, *, force: bool = False) -> None:
        """Copies what this process's hub and pool know into the gauges (at most once a second)."""
        now = time.monotonic()
        if not force and now - self._synced_at < SYNC_INTERVAL_SECONDS:
            return
        self._synced_at = now
        hub = getattr(services, "hub", None)
        subscribers = hub.subscriber_count if hub else 0
        self.subscriptions.set(subscribers)
        self.worker_subscriptions.set(subscribers)
        if hub is not None:
            self.events_published.set(hub.cursor)
            delivered = int(hub.delivered)
            synced = self._delivered_synced.get(hub, 0)  # per hub: test servers share a process
            if delivered > synced:
                self.events_delivered.inc(delivered - synced)
            self._delivered_synced[hub] = delivered
        for path in ("direct", "queued"):
            self.stream_deliveries.labels(path).set(self.stream_frames[path])
        pool = getattr(getattr(services, "db", None), "pool", None)
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            self.pool_connections.labels("in_use").set(size - idle)
            self.pool_connections.labels("idle").set(idle)
            self.pool_max.set(pool.get_max_size())

    async def render(self, services: Any) -> bytes:
        self.sync(services, force=True)
        db = getattr(services, "db", None)
        if db is not None:
            counts = await count_by_status(db, ACTIVE_RUN_STATES)
            for state in ACTIVE_RUN_STATES:
                self.runs.labels(state).set(counts.get(state, 0))
        if not MULTIPROCESS:
            return generate_latest(REGISTRY)
        registry = CollectorRegistry()
        multiproc.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def start_metrics_sync(services: Any) -> asyncio.Task[None] | None:
    """Under `serve --workers`: this worker's gauges kept current for scrapes answered by the others."""
    if not MULTIPROCESS:
        return None  # one process: the scrape syncs itself

    async def sync_every_second() -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_SECONDS)
            METRICS.sync(services, force=True)

    return asyncio.create_task(sync_every_second(), name="threadline-metrics-sync")


def process_stopped() -> None:
    """A worker leaving: its per-process gauges go from the aggregate (its counters stay counted)."""
    if MULTIPROCESS:
        multiproc.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


METRICS = Metrics()
