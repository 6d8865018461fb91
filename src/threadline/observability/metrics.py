"""Prometheus metrics of this process, in the text exposition format (hand-written: no dependency)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from threadline.runs.repository import count_by_status

ACTIVE_RUN_STATES = ("QUEUED", "IN_PROGRESS", "REQUIRES_ACTION", "CANCELLING")


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (transport, status)
        self.request_seconds = 0.0
        self.operations: Counter[str] = Counter()  # query | mutation | subscription
        self.errors: Counter[str] = Counter()  # extensions.code
        self.rate_limited: Counter[str] = Counter()  # budget
        self.stream_frames: Counter[str] = Counter()  # direct | queued (streaming.direct)

    def observe_request(self, transport: str, status: int | str, seconds: float) -> None:
        self.requests[(transport, str(status))] += 1
        self.request_seconds += seconds

    async def render(self, services: Any) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(
                    f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                )

        family(
            "threadline_http_requests_total",
            "counter",
            "HTTP requests, multipart subscription streams and WebSocket sessions by transport and status "
            "(WebSockets: close code).",
            [(f'{{transport="{t}",status="{s}"}}', n) for (t, s), n in sorted(self.requests.items())],
        )
        family(
            "threadline_http_request_seconds_total",
            "counter",
            "Time spent serving HTTP requests.",
            [("", round(self.request_seconds, 6))],
        )
        family(
            "threadline_graphql_operations_total",
            "counter",
            "GraphQL operations by type.",
            [(f'{{type="{t}"}}', n) for t, n in sorted(self.operations.items())],
        )
        family(
            "threadline_graphql_errors_total",
            "counter",
            "GraphQL errors by extensions.code.",
            [(f'{{code="{c}"}}', n) for c, n in sorted(self.errors.items())],
        )
        hub = getattr(services, "hub", None)
        family(
            "threadline_subscriptions_active",
            "gauge",
            "Live subscriptions held by this process.",
            [("", hub.subscriber_count if hub else 0)],
        )
        family(
            "threadline_events_published_total",
            "counter",
            "Position of the event log this process has read up to (events published by every process).",
            [("", hub.cursor if hub else 0)],
        )
        family(
            "threadline_events_delivered_total",
            "counter",
            "Events this process delivered to subscribers.",
            [("", hub.delivered if hub else 0)],
        )
        family(
            "threadline_stream_deliveries_total",
            "counter",
            "Events handed to subscriptions: written directly as a shared frame, or queued for the stock path.",
            [(f'{{path="{p}"}}', self.stream_frames[p]) for p in ("direct", "queued")],
        )
        db = getattr(services, "db", None)
        pool = getattr(db, "pool", None)
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            family(
                "threadline_db_pool_connections",
                "gauge",
                "Database pool connections by state.",
                [('{state="in_use"}', size - idle), ('{state="idle"}', idle)],
            )
            family(
                "threadline_db_pool_max", "gauge", "Database pool size limit.", [("", pool.get_max_size())]
            )
        if db is not None:
            counts = await count_by_status(db, ACTIVE_RUN_STATES)
            family(
                "threadline_runs",
                "gauge",
                "Runs not yet finished, by state (all processes).",
                [(f'{{state="{s}"}}', counts.get(s, 0)) for s in ACTIVE_RUN_STATES],
            )
        return "\n".join(lines) + "\n"


METRICS = Metrics()
