"""The providers a run can use, by name: `echo` (default, no network) and `openai` (any compatible endpoint)."""

from __future__ import annotations

from threadline.runs.providers.base import CompletionRequest, Finish, Provider, ProviderError
from threadline.runs.providers.echo import MODEL as ECHO_MODEL
from threadline.runs.providers.echo import EchoProvider
from threadline.runs.providers.openai import OpenAIProvider
from threadline.settings import Settings

__all__ = ["CompletionRequest", "Finish", "Provider", "ProviderError", "build_providers", "catalogue"]

NAMES = ("echo", "openai")


def catalogue(settings: Settings, name: str) -> tuple[frozenset[str], str] | None:
    """The models a provider accepts and its default model; None for an unknown provider."""
    if name == "echo":
        return frozenset({ECHO_MODEL}), ECHO_MODEL
    if name == "openai":
        return frozenset(settings.openai_models) | {
            settings.openai_default_model
        }, settings.openai_default_model
    return None


def build_providers(settings: Settings) -> dict[str, Provider]:
    """One instance of each provider for a worker process (the openai one holds a connection pool)."""
    return {
        "echo": EchoProvider(settings.echo_delay_seconds),
        "openai": OpenAIProvider(
            settings.openai_base_url,
            settings.openai_api_key,
            settings.openai_models,
            settings.openai_default_model,
            settings.openai_connect_timeout_seconds,
        ),
    }
