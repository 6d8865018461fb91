"""Embeddings (issue 19): chunk vectors by conversation, so a caller who reads few conversations (a member) is
answered from theirs (a nested loop over their conversations, then an exact sort) instead of a scan of the
tenant's vectors or a long filtered HNSW walk; `Conversation.similar` finds a conversation's vectors by it too."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T03:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message embeddings by conversation"

SQL = """
CREATE INDEX message_embedding_conversation ON message_embedding (conversation_id, model_id);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
