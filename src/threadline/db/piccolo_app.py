"""The Piccolo app: every table, and the top-level migrations/ folder."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from threadline.db.tables import ALL_TABLES


def migrations_folder() -> Path:
    """`migrations/` at the repo root in a checkout; packaged as `threadline/_migrations` in a wheel."""
    repo = Path(__file__).resolve().parents[3] / "migrations"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parents[1] / "_migrations"


APP_CONFIG = AppConfig(
    app_name="threadline",
    migrations_folder_path=str(migrations_folder()),
    table_classes=list(ALL_TABLES),
)
