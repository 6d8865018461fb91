"""The Piccolo app: every table, and the top-level migrations/ folder."""

from piccolo.conf.apps import AppConfig

from threadline.db.migrate import migrations_folder
from threadline.db.tables import ALL_TABLES

APP_CONFIG = AppConfig(
    app_name="threadline",
    migrations_folder_path=str(migrations_folder()),
    table_classes=list(ALL_TABLES),
)
