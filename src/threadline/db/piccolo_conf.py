"""Piccolo's configuration (PICCOLO_CONF points here): the engine and the one app.

The DSN comes from THREADLINE_RESOLVED_DSN, set by `threadline.db.migrate` after it has resolved
DATABASE_URL or started the embedded server; it falls back to DATABASE_URL for the piccolo CLI.
"""

import os

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

DB = PostgresEngine(
    config={"dsn": os.environ.get("THREADLINE_RESOLVED_DSN") or os.environ.get("DATABASE_URL", "")}
)

APP_REGISTRY = AppRegistry(apps=["threadline.db.piccolo_app"])
