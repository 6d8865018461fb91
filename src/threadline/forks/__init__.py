"""Forks: a copy of a branch, a path or a whole thread into a new conversation, with its provenance."""
