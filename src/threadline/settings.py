"""One typed settings object, read from environment variables (documented in README.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import platformdirs


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("threadline"))


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Build with `Settings.from_env()`; tests use `dataclasses.replace`."""

    database_url: str | None = None
    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    migrate_on_start: bool = True
    db_pool_min: int = 2
    db_pool_max: int = 20

    jwt_secret: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    page_size_max: int = 100
    page_size_default: int = 20
    title_max_chars: int = 500
    description_max_chars: int = 10_000
    tag_max_chars: int = 64
    tags_max_count: int = 50
    message_max_bytes: int = 1024 * 1024
    thread_max_depth: int = 1000
    messages_page_default: int = 50

    production: bool = False

    # Streaming (issue 4)
    broadcast_url: str | None = None
    subscriber_queue_size: int = 1000
    event_retention_days: float = 7.0
    presence_timeout_seconds: float = 60.0
    typing_timeout_seconds: float = 5.0
    ws_init_timeout_seconds: float = 10.0
    ws_max_operations: int = 100
    maintenance_interval_seconds: float = 1.0

    # Import, export, data rights (issue 7)
    import_item_max_bytes: int = 256 * 1024 * 1024
    import_concurrency: int = 3
    retention_interval_seconds: float = 3600.0

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = os.environ.get("THREADLINE_DATA_DIR")
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(data_dir) if data_dir else _default_data_dir(),
            host=_env_str("THREADLINE_HOST", cls.host),
            port=_env_int("THREADLINE_PORT", cls.port),
            migrate_on_start=_env_bool("THREADLINE_MIGRATE_ON_START", cls.migrate_on_start),
            db_pool_min=_env_int("THREADLINE_DB_POOL_MIN", cls.db_pool_min),
            db_pool_max=_env_int("THREADLINE_DB_POOL_MAX", cls.db_pool_max),
            jwt_secret=os.environ.get("THREADLINE_JWT_SECRET") or None,
            jwt_issuer=os.environ.get("THREADLINE_JWT_ISSUER") or None,
            jwt_audience=os.environ.get("THREADLINE_JWT_AUDIENCE") or None,
            page_size_max=_env_int("THREADLINE_PAGE_SIZE_MAX", cls.page_size_max),
            page_size_default=_env_int("THREADLINE_PAGE_SIZE_DEFAULT", cls.page_size_default),
            title_max_chars=_env_int("THREADLINE_TITLE_MAX_CHARS", cls.title_max_chars),
            description_max_chars=_env_int("THREADLINE_DESCRIPTION_MAX_CHARS", cls.description_max_chars),
            tag_max_chars=_env_int("THREADLINE_TAG_MAX_CHARS", cls.tag_max_chars),
            tags_max_count=_env_int("THREADLINE_TAGS_MAX_COUNT", cls.tags_max_count),
            message_max_bytes=_env_int("THREADLINE_MESSAGE_MAX_BYTES", cls.message_max_bytes),
            thread_max_depth=_env_int("THREADLINE_THREAD_MAX_DEPTH", cls.thread_max_depth),
            messages_page_default=_env_int("THREADLINE_MESSAGES_PAGE_DEFAULT", cls.messages_page_default),
            production=_env_bool("THREADLINE_PRODUCTION", cls.production),
            broadcast_url=os.environ.get("THREADLINE_BROADCAST_URL") or None,
            subscriber_queue_size=_env_int("THREADLINE_SUBSCRIBER_QUEUE_SIZE", cls.subscriber_queue_size),
            event_retention_days=_env_float("THREADLINE_EVENT_RETENTION_DAYS", cls.event_retention_days),
            presence_timeout_seconds=_env_float(
                "THREADLINE_PRESENCE_TIMEOUT_SECONDS", cls.presence_timeout_seconds
            ),
            typing_timeout_seconds=_env_float("THREADLINE_TYPING_TIMEOUT_SECONDS", cls.typing_timeout_seconds),
            ws_init_timeout_seconds=_env_float(
                "THREADLINE_WS_INIT_TIMEOUT_SECONDS", cls.ws_init_timeout_seconds
            ),
            ws_max_operations=_env_int("THREADLINE_WS_MAX_OPERATIONS", cls.ws_max_operations),
            maintenance_interval_seconds=_env_float(
                "THREADLINE_MAINTENANCE_INTERVAL_SECONDS", cls.maintenance_interval_seconds
            ),
            import_item_max_bytes=_env_int("THREADLINE_IMPORT_ITEM_MAX_BYTES", cls.import_item_max_bytes),
            import_concurrency=_env_int("THREADLINE_IMPORT_CONCURRENCY", cls.import_concurrency),
            retention_interval_seconds=_env_float(
                "THREADLINE_RETENTION_INTERVAL_SECONDS", cls.retention_interval_seconds
            ),
        )

    def describe(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "jwt_secret"}
