"""Raw SQL inside a Piccolo migration, on the migration's own transaction.

Piccolo's `Table.raw` formats the SQL and mangles literal braces; this runs the text unchanged.
"""

from collections.abc import Awaitable, Callable

from threadline.db import piccolo_conf


def run_sql(sql: str) -> Callable[[], Awaitable[None]]:
    async def apply() -> None:
        tx = piccolo_conf.DB.current_transaction.get()
        if tx is None:
            raise RuntimeError("raw migration SQL must run inside the migration's transaction")
        await tx.connection.execute(sql)

    return apply
