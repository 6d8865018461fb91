"""Threadline: a GraphQL API for AI chat history."""

__version__ = "0.1.0"
