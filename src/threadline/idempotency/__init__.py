"""Idempotency keys: a retried creating mutation returns what the first attempt created instead of writing again."""
