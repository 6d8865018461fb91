"""One typed settings object, read from environment variables (documented in README.md)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env_str(name, default).strip().lower()
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


LOG_LEVELS = ("debug", "info", "warning", "error")


def _env_log_level(name: str, default: str) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in LOG_LEVELS:
        raise ValueError(f"{name} must be one of {', '.join(LOG_LEVELS)}; got {raw!r}")
    return raw


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _env_networks(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated CIDRs or IP addresses, as networks (`192.0.2.7` is `192.0.2.7/32`)."""
    import ipaddress

    networks = []
    for value in _env_list(name, default):
        try:
            networks.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError as exc:
            raise ValueError(f"{name} must list CIDRs or IP addresses; got {value!r}") from exc
    return tuple(networks)


def _env_pairs(name: str, default: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    """`name=int,name=int` (e.g. THREADLINE_MODEL_CONTEXT_TOKENS=gpt-4o=128000,echo=8192)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    pairs = []
    for part in raw.split(","):
        key, sep, value = part.strip().rpartition("=")
        try:
            if not sep or not key:
                raise ValueError(part)
            pairs.append((key.strip(), int(value)))
        except ValueError as exc:
            raise ValueError(f"{name} must look like model=tokens,model=tokens; got {raw!r}") from exc
    return tuple(pairs)


def _env_secrets(name: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of string keys to secret strings (e.g. tenant id to HS256 secret)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return ()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a JSON object of strings") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise ValueError(f"{name} must be a JSON object of non-empty strings")
    return tuple(value.items())


FILE_STORAGES = ("postgres", "directory", "s3")


def _env_file_storage(name: str, default: str) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in FILE_STORAGES:
        raise ValueError(f"{name} must be one of {', '.join(FILE_STORAGES)}; got {raw!r}")
    return raw


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
    # Server-side bounds on every pool connection (PostgreSQL statement_timeout and
    # idle_in_transaction_session_timeout): a stuck writer cannot hold locks, or live delivery, for hours.
    db_statement_timeout_seconds: float = 60.0
    db_idle_in_transaction_timeout_seconds: float = 15.0
    # Issue 15 item 3, engines beyond one machine (README "Running on more than one machine").
    # "pgbouncer": DATABASE_URL goes through PgBouncer in transaction mode (no prepared statement cache, the
    # timeouts as SET LOCAL in each transaction instead of startup parameters).
    database_pooler: str = "none"
    # Straight to PostgreSQL, for what needs one server session: the run and enrichment workers' LISTEN and the
    # migrations' advisory lock. Unset: THREADLINE_BROADCAST_URL when it is a PostgreSQL URL, else DATABASE_URL.
    direct_database_url: str | None = None
    # A streaming replica that search reads from once it has replayed every commit made before the search began
    # (db.replica states the rule); it may wait this long for the replica to catch up, then reads the primary.
    read_database_url: str | None = None
    read_replica_max_wait_seconds: float = 0.1

    jwt_secret: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # (tenant id, HS256 secret): a tenant listed here accepts only tokens signed with its own secret.
    jwt_tenant_secrets: tuple[tuple[str, str], ...] = ()

    page_size_max: int = 100
    page_size_default: int = 20
    title_max_chars: int = 500
    description_max_chars: int = 10_000
    tag_max_chars: int = 64
    tags_max_count: int = 50
    message_max_bytes: int = 1024 * 1024
    # Content parts of one message (issue 17): how many, and how deep a tool call's JSON arguments may nest.
    message_max_parts: int = 64
    message_part_max_depth: int = 32
    # A run waiting for tool outputs (REQUIRES_ACTION) longer than this expires (issue 17).
    run_tool_outputs_timeout_seconds: float = 600.0
    thread_max_depth: int = 1000
    # conversationFork copies at most this many messages in its one transaction (issue 16): bigger is refused.
    fork_max_messages: int = 50_000
    messages_page_default: int = 50
    # Organising (issue 18): per-user bounds, so no one user's folders, pins or bookmarks grow without limit.
    folders_max: int = 500
    folder_depth_max: int = 8
    folder_name_max_chars: int = 200
    pins_max: int = 50
    bookmarks_max: int = 10_000
    bookmark_note_max_chars: int = 2000
    links_max: int = 200

    # Share links (issue 18 item 3): reads of one link, and reads from one client address, per window.
    share_reads_per_token: int = 300
    share_reads_per_address: int = 120
    share_rate_window_seconds: int = 60
    share_page_max_messages: int = 500  # GET /share/{token}: the page shows at most this many messages
    # Attachments (issue 18 item 5): upload size, where bytes live, and each tenant's total.
    file_max_bytes: int = 25 * 1024 * 1024
    file_storage: str = "postgres"  # or "directory" (file_directory), or "s3" (file_s3_*)
    file_directory: Path | None = None
    file_tenant_quota_bytes: int = 1024 * 1024 * 1024
    # file_storage "s3": any S3-compatible store, path-style, Signature Version 4.
    file_s3_endpoint: str | None = None
    file_s3_bucket: str | None = None
    file_s3_region: str = "us-east-1"
    file_s3_access_key: str | None = None
    file_s3_secret_key: str | None = None
    file_s3_prefix: str = ""
    # Uploads no message takes within this long are deleted (0: kept until their uploader is erased).
    file_unattached_ttl_seconds: float = 86400.0

    production: bool = False
    # Report each response's SQL statement count in `extensions.sqlStatements` (tests, benchmarks).
    expose_sql_count: bool = False

    # Streaming (issue 4)
    broadcast_url: str | None = None
    subscriber_queue_size: int = 1000
    event_memo_max_bytes: int = 64 * 1024 * 1024  # the hub's memo of rendered events, by payload bytes
    # Live events go straight to the socket (one shared, pre-serialised frame per event and query) when the
    # server and the result allow it; False sends every frame through the stock per-operation path.
    stream_direct_frames: bool = True
    event_retention_days: float = 7.0
    presence_timeout_seconds: float = 60.0
    typing_timeout_seconds: float = 5.0
    ws_init_timeout_seconds: float = 10.0
    ws_max_operations: int = 100
    # Open WebSockets one user may hold in one process (0: no cap): one more is refused at connection_init (4429).
    ws_max_sockets_per_user: int = 200
    maintenance_interval_seconds: float = 1.0

    # Import, export, data rights (issue 7)
    import_item_max_bytes: int = 256 * 1024 * 1024
    import_concurrency: int = 3
    # One conversationImport(Report) request (issue 12): bigger imports belong to `threadline import`.
    import_api_max_bytes: int = 8 * 1024 * 1024
    import_api_max_conversations: int = 100
    import_api_max_messages: int = 10_000
    import_items_per_mutation: int = 100
    # Export archives read by `threadline import` (zip bombs): checked before and while expanding.
    import_zip_max_members: int = 10_000
    import_zip_max_member_bytes: int = 4 * 1024 * 1024 * 1024
    import_zip_max_total_bytes: int = 16 * 1024 * 1024 * 1024
    import_zip_max_ratio: int = 100
    retention_interval_seconds: float = 3600.0
    # How often `threadline worker` runs the cold-tier pass (tiers/; 0: never, `threadline tiers run` only).
    tiers_interval_seconds: float = 3600.0
    # How long a creating mutation's idempotency key (clientMutationId / Idempotency-Key) is kept, per user.
    idempotency_ttl_seconds: float = 86400.0

    # Titles, summaries and tag suggestions (enrich/, issue 19 item 3)
    enrichment_workers: int = 1  # jobs at once in each server process; 0: this process runs none
    enrichment_poll_seconds: float = 2.0
    enrichment_timeout_seconds: float = 30.0  # one generation through a provider
    enrichment_max_attempts: int = 3
    enrichment_summary_every: int = 20  # messages of growth before the summary and tags are made again
    enrichment_title_max_chars: int = 80
    enrichment_summary_max_chars: int = 1000
    # `extractive`: summaries by the offline rules; `provider`: through the conversation's provider (its tokens).
    enrichment_summaries: str = "extractive"

    # Runs (issue 5)
    run_workers: int = 2
    run_queue: str = "default"
    run_poll_seconds: float = 1.0
    run_heartbeat_seconds: float = 1.0
    run_stale_seconds: float = 30.0
    run_recovery_seconds: float = 1.0
    run_on_lost_worker: str = "expire"
    run_max_attempts: int = 3
    run_timeout_seconds: float = 300.0
    # What one user has active at once, across every process, counted in PostgreSQL: their active runs plus their
    # completions in progress through the gateway (/v1), one per call whatever its `n` (runs.repository.user_active).
    # Past it runCreate is RATE_LIMITED and a /v1 call 429 rate_limit_exceeded (gateway.admission; 0: no cap on those).
    run_max_active_per_user: int = 10
    # A tenant's model work executing at once, across every process, counted in PostgreSQL: its runs IN_PROGRESS or
    # CANCELLING plus its completions in progress through the gateway (/v1), one place per choice `n`, one number
    # (runs.repository.tenant_executing). Past it a run stays queued until a place frees (claim_next); a /v1 call,
    # whose client cannot wait, is refused 429 rate_limit_exceeded with Retry-After (gateway.admission). Queued runs
    # and runs waiting for tool outputs hold no model and count toward nothing. 0: no cap.
    run_max_executing_per_tenant: int = 10
    run_delta_interval_seconds: float = 0.05
    run_default_provider: str = "echo"
    run_output_reserve_tokens: int = 1024
    model_context_tokens: tuple[tuple[str, int], ...] = (
        ("echo", 8192),
        ("gpt-4o", 128_000),
        ("gpt-4o-mini", 128_000),
        ("gpt-4.1", 1_000_000),
        ("gpt-4.1-mini", 1_000_000),
    )
    default_context_tokens: int = 8192
    echo_delay_seconds: float = 0.02
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str | None = None
    openai_default_model: str = "gpt-4o-mini"
    openai_models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini")
    openai_connect_timeout_seconds: float = 10.0
    # Embeddings (issue 19): `off`, `openai` (an OpenAI-compatible /v1/embeddings endpoint), `local`
    # (all-MiniLM-L6-v2 in this process: embeddings/local.py) or `test` (the deterministic concept-hashing embedder
    # of the suite and the bench; refused in production).
    embeddings: str = "off"
    embeddings_local_model: str = ""  # `local`: the model's directory or model.zip; "": the installed wheel's
    embeddings_url: str = "https://api.openai.com/v1"
    embeddings_api_key: str | None = None
    embeddings_model: str = "text-embedding-3-small"
    embeddings_dimensions: int = 0  # 0: the model's own; else sent as `dimensions`
    embeddings_timeout_seconds: float = 30.0
    embeddings_batch: int = 32  # messages the indexer claims at once
    embeddings_rate: float = 50.0  # messages per second at most per indexer; 0: unthrottled
    embeddings_poll_seconds: float = 1.0
    embeddings_settle_seconds: float = 1.0  # a message changed this recently (a streaming reply) waits
    embeddings_lease_seconds: float = 120.0  # a claimed batch of a dead indexer is taken over after this
    embeddings_max_attempts: int = 5
    embeddings_min_similarity: float = 0.2  # SEMANTIC candidates below this cosine similarity are dropped
    # How vector candidates are found: `auto` (an exact scan of what the caller reads, or the HNSW index when that
    # is cheaper by the planner's estimates), `exact` or `index` (forced; an index scan short of its LIMIT is
    # still done again exactly).
    embeddings_vector_scan: str = "auto"

    # Limits and hardening (issue 8)
    query_max_depth: int = 15
    query_max_aliases: int = 30
    query_max_tokens: int = 2000
    query_max_cost: int = 20_000
    query_max_duplicate_fields: int = 20
    query_max_fragment_spreads: int = 40
    # Values in one request's variables as their input types read them (graphql.limits): each list item and input
    # object field counts, a scalar (a JSON one too) is one value.
    query_max_input_values: int = 10_000
    query_max_messages: int = 25_000
    response_max_bytes: int = 64 * 1024 * 1024
    request_max_bytes: int = 10 * 1024 * 1024
    # Operations one HTTP request may batch (a JSON array body, Apollo's BatchHttpLink); 0 refuses batches. Each
    # operation is limited and rate-counted on its own (graphql/batching.py).
    batch_max: int = 0
    # Persisted documents (graphql/persisted.py): automatic persisted queries kept in the database (least
    # recently used evicted beyond the count; a longer text runs but is not kept), and trusted-documents mode
    # (only documents registered with `threadline documents register` run).
    persisted_documents_max: int = 10_000
    persisted_document_max_bytes: int = 100_000
    trusted_documents: bool = False
    ws_max_message_bytes: int = 1024 * 1024
    introspection: bool = True
    cors_origins: tuple[str, ...] = ()
    ws_allowed_origins: tuple[str, ...] = ()
    log_json: bool = False
    # "debug" also shows the embedded PostgreSQL's own output (initdb, pg_ctl) and library chatter.
    log_level: str = "info"
    metrics_enabled: bool = True
    # /metrics answers only `Authorization: Bearer <this>`; without it /metrics is not served at all.
    metrics_token: str | None = None
    # The secret stream cursors are keyed by (per tenant); unset: a random one stored in the database.
    cursor_secret: str | None = None
    rate_limit_enabled: bool = True
    rate_limit_window_seconds: int = 60
    rate_limit_requests: int = 6000
    rate_limit_mutations: int = 1200
    rate_limit_runs: int = 300
    rate_limit_subscriptions: int = 600
    rate_limit_burst: int = 0
    # Operations of callers without credentials (introspection, shared links) per client address, window and
    # process (ratelimits.service.AnonymousWindows); 0: none counted.
    rate_limit_anonymous: int = 120
    # Proxies (CIDRs or addresses) whose X-Forwarded-For / Forwarded name the client (ratelimits.addresses): a
    # request from one is counted, for the anonymous and shared links' per-address windows, as the rightmost hop
    # that is not itself a trusted proxy. Empty: the TCP peer is the client (behind a proxy, its callers share).
    trusted_proxies: tuple[str, ...] = ()
    # Request tokens one process may take ahead for a user querying it in quick succession (ratelimits.service
    # leases: one statement per this many plain queries); 1 draws every query on its own.
    rate_limit_lease_max: int = 16
    # Operator ceilings no tenant profile exceeds: per THREADLINE_RATE_LIMIT_WINDOW_SECONDS, and tokens held.
    rate_limit_ceiling_requests: int = 60_000
    rate_limit_ceiling_mutations: int = 12_000
    rate_limit_ceiling_runs: int = 3_000
    rate_limit_ceiling_subscriptions: int = 6_000
    shutdown_grace_seconds: float = 10.0
    # Objects allocated between young-generation collections (Python's default is 700); 0 keeps the default.
    gc_gen0_threshold: int = 50_000
    # Issue 14. How long a process trusts a cached credential at most (principal.changed empties the caches of
    # every process at once; this bounds a change's delay when the hub is held back); 0: no cache.
    credential_cache_seconds: float = 1.0
    # `threadline serve` processes on one port; 0: one per core.
    workers: int = 0
    # OpenTelemetry tracing (the `tracing` extra): GraphQL operations and resolvers, and asyncpg statements.
    tracing_enabled: bool = False
    # Issue 20 item 1, encryption at rest (crypto/). The master key (base64 of 32 bytes) that wraps the data keys,
    # or a file holding it; earlier master keys still accepted for unwrapping while `threadline keys rotate` runs.
    master_key: str | None = None
    master_key_file: Path | None = None
    master_keys_previous: tuple[str, ...] = ()
    # "auto": new content is sealed when a master key is configured; "off": read sealed content, seal nothing new.
    encryption: str = "auto"
    # Also seal conversation titles and descriptions (their search then uses the index the writer computes).
    encrypt_titles: bool = False
    # Unwrapped data keys held per process, and for how long before their row is read again (a key shredded by
    # another process stops decrypting here within this time).
    key_cache_size: int = 10_000
    key_cache_seconds: float = 30.0
    # Opened values kept per process (by their sealed form, within this many bytes; 0: none), so a thread read
    # again does not pay AES-GCM per message again. Entries of a key shredded or re-read are not served.
    plaintext_cache_bytes: int = 64 * 1024 * 1024

    @property
    def direct_url(self) -> str | None:
        """Where session-bound connections go (direct_database_url explains)."""
        if self.direct_database_url:
            return self.direct_database_url
        if self.broadcast_url and self.broadcast_url.startswith(("postgres://", "postgresql://")):
            return self.broadcast_url
        return self.database_url

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
            db_statement_timeout_seconds=_env_float(
                "THREADLINE_DB_STATEMENT_TIMEOUT_SECONDS", cls.db_statement_timeout_seconds
            ),
            db_idle_in_transaction_timeout_seconds=_env_float(
                "THREADLINE_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
                cls.db_idle_in_transaction_timeout_seconds,
            ),
            database_pooler=_env_choice(
                "THREADLINE_DATABASE_POOLER", cls.database_pooler, ("none", "pgbouncer")
            ),
            direct_database_url=os.environ.get("THREADLINE_DIRECT_DATABASE_URL") or None,
            read_database_url=os.environ.get("THREADLINE_READ_DATABASE_URL") or None,
            read_replica_max_wait_seconds=_env_float(
                "THREADLINE_READ_REPLICA_MAX_WAIT_SECONDS", cls.read_replica_max_wait_seconds
            ),
            jwt_secret=os.environ.get("THREADLINE_JWT_SECRET") or None,
            jwt_issuer=os.environ.get("THREADLINE_JWT_ISSUER") or None,
            jwt_audience=os.environ.get("THREADLINE_JWT_AUDIENCE") or None,
            jwt_tenant_secrets=_env_secrets("THREADLINE_JWT_TENANT_SECRETS"),
            page_size_max=_env_int("THREADLINE_PAGE_SIZE_MAX", cls.page_size_max),
            page_size_default=_env_int("THREADLINE_PAGE_SIZE_DEFAULT", cls.page_size_default),
            title_max_chars=_env_int("THREADLINE_TITLE_MAX_CHARS", cls.title_max_chars),
            description_max_chars=_env_int("THREADLINE_DESCRIPTION_MAX_CHARS", cls.description_max_chars),
            tag_max_chars=_env_int("THREADLINE_TAG_MAX_CHARS", cls.tag_max_chars),
            tags_max_count=_env_int("THREADLINE_TAGS_MAX_COUNT", cls.tags_max_count),
            message_max_bytes=_env_int("THREADLINE_MESSAGE_MAX_BYTES", cls.message_max_bytes),
            message_max_parts=_env_int("THREADLINE_MESSAGE_MAX_PARTS", cls.message_max_parts),
            message_part_max_depth=_env_int("THREADLINE_MESSAGE_PART_MAX_DEPTH", cls.message_part_max_depth),
            run_tool_outputs_timeout_seconds=_env_float(
                "THREADLINE_RUN_TOOL_OUTPUTS_TIMEOUT_SECONDS", cls.run_tool_outputs_timeout_seconds
            ),
            thread_max_depth=_env_int("THREADLINE_THREAD_MAX_DEPTH", cls.thread_max_depth),
            fork_max_messages=_env_int("THREADLINE_FORK_MAX_MESSAGES", cls.fork_max_messages),
            messages_page_default=_env_int("THREADLINE_MESSAGES_PAGE_DEFAULT", cls.messages_page_default),
            folders_max=_env_int("THREADLINE_FOLDERS_MAX", cls.folders_max),
            folder_depth_max=_env_int("THREADLINE_FOLDER_DEPTH_MAX", cls.folder_depth_max),
            folder_name_max_chars=_env_int("THREADLINE_FOLDER_NAME_MAX_CHARS", cls.folder_name_max_chars),
            pins_max=_env_int("THREADLINE_PINS_MAX", cls.pins_max),
            bookmarks_max=_env_int("THREADLINE_BOOKMARKS_MAX", cls.bookmarks_max),
            bookmark_note_max_chars=_env_int(
                "THREADLINE_BOOKMARK_NOTE_MAX_CHARS", cls.bookmark_note_max_chars
            ),
            links_max=_env_int("THREADLINE_LINKS_MAX", cls.links_max),
            share_reads_per_token=_env_int("THREADLINE_SHARE_READS_PER_TOKEN", cls.share_reads_per_token),
            share_reads_per_address=_env_int(
                "THREADLINE_SHARE_READS_PER_ADDRESS", cls.share_reads_per_address
            ),
            share_rate_window_seconds=_env_int(
                "THREADLINE_SHARE_RATE_WINDOW_SECONDS", cls.share_rate_window_seconds
            ),
            share_page_max_messages=_env_int(
                "THREADLINE_SHARE_PAGE_MAX_MESSAGES", cls.share_page_max_messages
            ),
            file_max_bytes=_env_int("THREADLINE_FILE_MAX_BYTES", cls.file_max_bytes),
            file_storage=_env_file_storage("THREADLINE_FILE_STORAGE", cls.file_storage),
            file_directory=Path(os.environ["THREADLINE_FILE_DIRECTORY"])
            if os.environ.get("THREADLINE_FILE_DIRECTORY")
            else None,
            file_tenant_quota_bytes=_env_int(
                "THREADLINE_FILE_TENANT_QUOTA_BYTES", cls.file_tenant_quota_bytes
            ),
            file_s3_endpoint=os.environ.get("THREADLINE_FILE_S3_ENDPOINT") or None,
            file_s3_bucket=os.environ.get("THREADLINE_FILE_S3_BUCKET") or None,
            file_s3_region=_env_str("THREADLINE_FILE_S3_REGION", cls.file_s3_region),
            file_s3_access_key=os.environ.get("THREADLINE_FILE_S3_ACCESS_KEY") or None,
            file_s3_secret_key=os.environ.get("THREADLINE_FILE_S3_SECRET_KEY") or None,
            file_s3_prefix=_env_str("THREADLINE_FILE_S3_PREFIX", cls.file_s3_prefix),
            file_unattached_ttl_seconds=_env_float(
                "THREADLINE_FILE_UNATTACHED_TTL_SECONDS", cls.file_unattached_ttl_seconds
            ),
            production=_env_bool("THREADLINE_PRODUCTION", cls.production),
            expose_sql_count=_env_bool("THREADLINE_EXPOSE_SQL_COUNT", cls.expose_sql_count),
            broadcast_url=os.environ.get("THREADLINE_BROADCAST_URL") or None,
            subscriber_queue_size=_env_int("THREADLINE_SUBSCRIBER_QUEUE_SIZE", cls.subscriber_queue_size),
            event_memo_max_bytes=_env_int("THREADLINE_EVENT_MEMO_MAX_BYTES", cls.event_memo_max_bytes),
            stream_direct_frames=_env_bool("THREADLINE_STREAM_DIRECT_FRAMES", cls.stream_direct_frames),
            event_retention_days=_env_float("THREADLINE_EVENT_RETENTION_DAYS", cls.event_retention_days),
            presence_timeout_seconds=_env_float(
                "THREADLINE_PRESENCE_TIMEOUT_SECONDS", cls.presence_timeout_seconds
            ),
            typing_timeout_seconds=_env_float(
                "THREADLINE_TYPING_TIMEOUT_SECONDS", cls.typing_timeout_seconds
            ),
            ws_init_timeout_seconds=_env_float(
                "THREADLINE_WS_INIT_TIMEOUT_SECONDS", cls.ws_init_timeout_seconds
            ),
            ws_max_operations=_env_int("THREADLINE_WS_MAX_OPERATIONS", cls.ws_max_operations),
            ws_max_sockets_per_user=_env_int(
                "THREADLINE_WS_MAX_SOCKETS_PER_USER", cls.ws_max_sockets_per_user
            ),
            maintenance_interval_seconds=_env_float(
                "THREADLINE_MAINTENANCE_INTERVAL_SECONDS", cls.maintenance_interval_seconds
            ),
            import_item_max_bytes=_env_int("THREADLINE_IMPORT_ITEM_MAX_BYTES", cls.import_item_max_bytes),
            import_concurrency=_env_int("THREADLINE_IMPORT_CONCURRENCY", cls.import_concurrency),
            import_api_max_bytes=_env_int("THREADLINE_IMPORT_API_MAX_BYTES", cls.import_api_max_bytes),
            import_api_max_conversations=_env_int(
                "THREADLINE_IMPORT_API_MAX_CONVERSATIONS", cls.import_api_max_conversations
            ),
            import_api_max_messages=_env_int(
                "THREADLINE_IMPORT_API_MAX_MESSAGES", cls.import_api_max_messages
            ),
            import_items_per_mutation=_env_int(
                "THREADLINE_IMPORT_ITEMS_PER_MUTATION", cls.import_items_per_mutation
            ),
            import_zip_max_members=_env_int("THREADLINE_IMPORT_ZIP_MAX_MEMBERS", cls.import_zip_max_members),
            import_zip_max_member_bytes=_env_int(
                "THREADLINE_IMPORT_ZIP_MAX_MEMBER_BYTES", cls.import_zip_max_member_bytes
            ),
            import_zip_max_total_bytes=_env_int(
                "THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES", cls.import_zip_max_total_bytes
            ),
            import_zip_max_ratio=_env_int("THREADLINE_IMPORT_ZIP_MAX_RATIO", cls.import_zip_max_ratio),
            retention_interval_seconds=_env_float(
                "THREADLINE_RETENTION_INTERVAL_SECONDS", cls.retention_interval_seconds
            ),
            tiers_interval_seconds=_env_float(
                "THREADLINE_TIERS_INTERVAL_SECONDS", cls.tiers_interval_seconds
            ),
            idempotency_ttl_seconds=_env_float(
                "THREADLINE_IDEMPOTENCY_TTL_SECONDS", cls.idempotency_ttl_seconds
            ),
            enrichment_workers=_env_int("THREADLINE_ENRICHMENT_WORKERS", cls.enrichment_workers),
            enrichment_poll_seconds=_env_float(
                "THREADLINE_ENRICHMENT_POLL_SECONDS", cls.enrichment_poll_seconds
            ),
            enrichment_timeout_seconds=_env_float(
                "THREADLINE_ENRICHMENT_TIMEOUT_SECONDS", cls.enrichment_timeout_seconds
            ),
            enrichment_max_attempts=_env_int(
                "THREADLINE_ENRICHMENT_MAX_ATTEMPTS", cls.enrichment_max_attempts
            ),
            enrichment_summary_every=_env_int(
                "THREADLINE_ENRICHMENT_SUMMARY_EVERY", cls.enrichment_summary_every
            ),
            enrichment_title_max_chars=_env_int(
                "THREADLINE_ENRICHMENT_TITLE_MAX_CHARS", cls.enrichment_title_max_chars
            ),
            enrichment_summary_max_chars=_env_int(
                "THREADLINE_ENRICHMENT_SUMMARY_MAX_CHARS", cls.enrichment_summary_max_chars
            ),
            enrichment_summaries=_env_choice(
                "THREADLINE_ENRICHMENT_SUMMARIES", cls.enrichment_summaries, ("extractive", "provider")
            ),
            run_workers=_env_int("THREADLINE_RUN_WORKERS", cls.run_workers),
            run_queue=_env_str("THREADLINE_RUN_QUEUE", cls.run_queue),
            run_poll_seconds=_env_float("THREADLINE_RUN_POLL_SECONDS", cls.run_poll_seconds),
            run_heartbeat_seconds=_env_float("THREADLINE_RUN_HEARTBEAT_SECONDS", cls.run_heartbeat_seconds),
            run_stale_seconds=_env_float("THREADLINE_RUN_STALE_SECONDS", cls.run_stale_seconds),
            run_recovery_seconds=_env_float("THREADLINE_RUN_RECOVERY_SECONDS", cls.run_recovery_seconds),
            run_on_lost_worker=_env_str("THREADLINE_RUN_ON_LOST_WORKER", cls.run_on_lost_worker),
            run_max_attempts=_env_int("THREADLINE_RUN_MAX_ATTEMPTS", cls.run_max_attempts),
            run_timeout_seconds=_env_float("THREADLINE_RUN_TIMEOUT_SECONDS", cls.run_timeout_seconds),
            run_max_active_per_user=_env_int(
                "THREADLINE_RUN_MAX_ACTIVE_PER_USER", cls.run_max_active_per_user
            ),
            run_max_executing_per_tenant=_env_int(
                "THREADLINE_RUN_MAX_EXECUTING_PER_TENANT", cls.run_max_executing_per_tenant
            ),
            run_delta_interval_seconds=_env_float(
                "THREADLINE_RUN_DELTA_INTERVAL_SECONDS", cls.run_delta_interval_seconds
            ),
            run_default_provider=_env_str("THREADLINE_RUN_DEFAULT_PROVIDER", cls.run_default_provider),
            run_output_reserve_tokens=_env_int(
                "THREADLINE_RUN_OUTPUT_RESERVE_TOKENS", cls.run_output_reserve_tokens
            ),
            model_context_tokens=_env_pairs("THREADLINE_MODEL_CONTEXT_TOKENS", cls.model_context_tokens),
            default_context_tokens=_env_int("THREADLINE_DEFAULT_CONTEXT_TOKENS", cls.default_context_tokens),
            echo_delay_seconds=_env_float("THREADLINE_ECHO_DELAY_SECONDS", cls.echo_delay_seconds),
            openai_base_url=_env_str("THREADLINE_OPENAI_BASE_URL", cls.openai_base_url),
            openai_api_key=os.environ.get("THREADLINE_OPENAI_API_KEY")
            or os.environ.get("OPENAI_API_KEY")
            or None,
            openai_default_model=_env_str("THREADLINE_OPENAI_DEFAULT_MODEL", cls.openai_default_model),
            openai_models=_env_list("THREADLINE_OPENAI_MODELS", cls.openai_models),
            openai_connect_timeout_seconds=_env_float(
                "THREADLINE_OPENAI_CONNECT_TIMEOUT_SECONDS", cls.openai_connect_timeout_seconds
            ),
            embeddings=_env_str("THREADLINE_EMBEDDINGS", cls.embeddings).lower(),
            embeddings_local_model=_env_str("THREADLINE_EMBEDDINGS_LOCAL_MODEL", cls.embeddings_local_model),
            embeddings_url=_env_str("THREADLINE_EMBEDDINGS_URL", cls.embeddings_url),
            embeddings_api_key=os.environ.get("THREADLINE_EMBEDDINGS_API_KEY") or None,
            embeddings_model=_env_str("THREADLINE_EMBEDDINGS_MODEL", cls.embeddings_model),
            embeddings_dimensions=_env_int("THREADLINE_EMBEDDINGS_DIMENSIONS", cls.embeddings_dimensions),
            embeddings_timeout_seconds=_env_float(
                "THREADLINE_EMBEDDINGS_TIMEOUT_SECONDS", cls.embeddings_timeout_seconds
            ),
            embeddings_batch=_env_int("THREADLINE_EMBEDDINGS_BATCH", cls.embeddings_batch),
            embeddings_rate=_env_float("THREADLINE_EMBEDDINGS_RATE", cls.embeddings_rate),
            embeddings_poll_seconds=_env_float(
                "THREADLINE_EMBEDDINGS_POLL_SECONDS", cls.embeddings_poll_seconds
            ),
            embeddings_settle_seconds=_env_float(
                "THREADLINE_EMBEDDINGS_SETTLE_SECONDS", cls.embeddings_settle_seconds
            ),
            embeddings_lease_seconds=_env_float(
                "THREADLINE_EMBEDDINGS_LEASE_SECONDS", cls.embeddings_lease_seconds
            ),
            embeddings_max_attempts=_env_int(
                "THREADLINE_EMBEDDINGS_MAX_ATTEMPTS", cls.embeddings_max_attempts
            ),
            embeddings_min_similarity=_env_float(
                "THREADLINE_EMBEDDINGS_MIN_SIMILARITY", cls.embeddings_min_similarity
            ),
            embeddings_vector_scan=_env_choice(
                "THREADLINE_EMBEDDINGS_VECTOR_SCAN", cls.embeddings_vector_scan, ("auto", "exact", "index")
            ),
            query_max_depth=_env_int("THREADLINE_QUERY_MAX_DEPTH", cls.query_max_depth),
            query_max_aliases=_env_int("THREADLINE_QUERY_MAX_ALIASES", cls.query_max_aliases),
            query_max_tokens=_env_int("THREADLINE_QUERY_MAX_TOKENS", cls.query_max_tokens),
            query_max_cost=_env_int("THREADLINE_QUERY_MAX_COST", cls.query_max_cost),
            query_max_duplicate_fields=_env_int(
                "THREADLINE_QUERY_MAX_DUPLICATE_FIELDS", cls.query_max_duplicate_fields
            ),
            query_max_fragment_spreads=_env_int(
                "THREADLINE_QUERY_MAX_FRAGMENT_SPREADS", cls.query_max_fragment_spreads
            ),
            query_max_input_values=_env_int("THREADLINE_QUERY_MAX_INPUT_VALUES", cls.query_max_input_values),
            query_max_messages=_env_int("THREADLINE_QUERY_MAX_MESSAGES", cls.query_max_messages),
            response_max_bytes=_env_int("THREADLINE_RESPONSE_MAX_BYTES", cls.response_max_bytes),
            request_max_bytes=_env_int("THREADLINE_REQUEST_MAX_BYTES", cls.request_max_bytes),
            batch_max=_env_int("THREADLINE_BATCH_MAX", cls.batch_max),
            persisted_documents_max=_env_int(
                "THREADLINE_PERSISTED_DOCUMENTS_MAX", cls.persisted_documents_max
            ),
            persisted_document_max_bytes=_env_int(
                "THREADLINE_PERSISTED_DOCUMENT_MAX_BYTES", cls.persisted_document_max_bytes
            ),
            trusted_documents=_env_bool("THREADLINE_TRUSTED_DOCUMENTS", cls.trusted_documents),
            ws_max_message_bytes=_env_int("THREADLINE_WS_MAX_MESSAGE_BYTES", cls.ws_max_message_bytes),
            introspection=_env_bool("THREADLINE_INTROSPECTION", cls.introspection),
            cors_origins=_env_list("THREADLINE_CORS_ORIGINS", cls.cors_origins),
            ws_allowed_origins=_env_list("THREADLINE_WS_ALLOWED_ORIGINS", cls.ws_allowed_origins),
            log_json=_env_bool("THREADLINE_LOG_JSON", cls.log_json),
            log_level=_env_log_level("THREADLINE_LOG_LEVEL", cls.log_level),
            metrics_enabled=_env_bool("THREADLINE_METRICS", cls.metrics_enabled),
            metrics_token=os.environ.get("THREADLINE_METRICS_TOKEN") or None,
            cursor_secret=os.environ.get("THREADLINE_CURSOR_SECRET") or None,
            rate_limit_enabled=_env_bool("THREADLINE_RATE_LIMIT", cls.rate_limit_enabled),
            rate_limit_window_seconds=_env_int(
                "THREADLINE_RATE_LIMIT_WINDOW_SECONDS", cls.rate_limit_window_seconds
            ),
            rate_limit_requests=_env_int("THREADLINE_RATE_LIMIT_REQUESTS", cls.rate_limit_requests),
            rate_limit_mutations=_env_int("THREADLINE_RATE_LIMIT_MUTATIONS", cls.rate_limit_mutations),
            rate_limit_runs=_env_int("THREADLINE_RATE_LIMIT_RUNS", cls.rate_limit_runs),
            rate_limit_subscriptions=_env_int(
                "THREADLINE_RATE_LIMIT_SUBSCRIPTIONS", cls.rate_limit_subscriptions
            ),
            rate_limit_burst=_env_int("THREADLINE_RATE_LIMIT_BURST", cls.rate_limit_burst),
            rate_limit_anonymous=_env_int("THREADLINE_RATE_LIMIT_ANONYMOUS", cls.rate_limit_anonymous),
            trusted_proxies=_env_networks("THREADLINE_TRUSTED_PROXIES", cls.trusted_proxies),
            rate_limit_lease_max=_env_int("THREADLINE_RATE_LIMIT_LEASE", cls.rate_limit_lease_max),
            rate_limit_ceiling_requests=_env_int(
                "THREADLINE_RATE_LIMIT_CEILING_REQUESTS", cls.rate_limit_ceiling_requests
            ),
            rate_limit_ceiling_mutations=_env_int(
                "THREADLINE_RATE_LIMIT_CEILING_MUTATIONS", cls.rate_limit_ceiling_mutations
            ),
            rate_limit_ceiling_runs=_env_int(
                "THREADLINE_RATE_LIMIT_CEILING_RUNS", cls.rate_limit_ceiling_runs
            ),
            rate_limit_ceiling_subscriptions=_env_int(
                "THREADLINE_RATE_LIMIT_CEILING_SUBSCRIPTIONS", cls.rate_limit_ceiling_subscriptions
            ),
            shutdown_grace_seconds=_env_float(
                "THREADLINE_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds
            ),
            gc_gen0_threshold=_env_int("THREADLINE_GC_GEN0_THRESHOLD", cls.gc_gen0_threshold),
            credential_cache_seconds=_env_float(
                "THREADLINE_CREDENTIAL_CACHE_SECONDS", cls.credential_cache_seconds
            ),
            workers=_env_int("THREADLINE_WORKERS", cls.workers),
            tracing_enabled=_env_bool("THREADLINE_TRACING", cls.tracing_enabled),
            master_key=os.environ.get("THREADLINE_MASTER_KEY") or None,
            master_key_file=Path(os.environ["THREADLINE_MASTER_KEY_FILE"])
            if os.environ.get("THREADLINE_MASTER_KEY_FILE")
            else None,
            master_keys_previous=_env_list("THREADLINE_MASTER_KEYS_PREVIOUS", ()),
            encryption=_env_choice("THREADLINE_ENCRYPTION", cls.encryption, ("auto", "off")),
            encrypt_titles=_env_bool("THREADLINE_ENCRYPT_TITLES", cls.encrypt_titles),
            key_cache_size=_env_int("THREADLINE_KEY_CACHE_SIZE", cls.key_cache_size),
            key_cache_seconds=_env_float("THREADLINE_KEY_CACHE_SECONDS", cls.key_cache_seconds),
            plaintext_cache_bytes=_env_int("THREADLINE_PLAINTEXT_CACHE_BYTES", cls.plaintext_cache_bytes),
        )
