"""Database access: the embedded server, the pool, the one transaction helper, migrations."""

from threadline.db.database import (
    Database,
    Executor,
    Transaction,
    count_request_statements,
    sql_statement_count,
)

__all__ = ["Database", "Executor", "Transaction", "count_request_statements", "sql_statement_count"]
