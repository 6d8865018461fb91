"""The per-process StreamHub (completed in the streaming issue)."""

from __future__ import annotations

from threadline.db import Database
from threadline.settings import Settings


class StreamHub:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
