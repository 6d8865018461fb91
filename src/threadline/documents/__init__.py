"""Persisted GraphQL documents: automatic persisted queries and trusted documents (graphql/persisted.py)."""
